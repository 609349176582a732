#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, from real files where the machine has them.

Writes fuzz/seeds/<target>/* (or DIR/<target>/* with `make_seeds.py DIR`: tests/fuzz_corpus.rs). Sources: Fashion-MNIST's IDX files (/usr/share/datasets/
fashion-mnist, Debian's dataset-fashion-mnist; two of its images also as CIFAR binary records
and as colour, grey and RGBA PNGs), real JPEGs (Python's
and the image crate's test images, where installed), the small run in
fuzz/fixtures (written by `resnet-ode train`), and PyTorch checkpoints in both formats written
here without torch (the pickle protocol torch uses, with two small tensors). The layout of
each target's input (selector bytes, split points) is described at the top of its source.
"""
import collections, glob, gzip, io, os, pickle, struct, sys, sysconfig, types, zipfile, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "seeds")
FASHION = "/usr/share/datasets/fashion-mnist"
FIX = os.path.join(HERE, "fixtures")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def split2(a, b):
    return struct.pack("<H", len(a)) + a + b


# --- IDX: the first n examples of Fashion-MNIST's test set, headers rewritten.
def idx_pair(n, rows=28, cols=28):
    with gzip.open(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")) as f:
        head = f.read(16 + n * 784)
    with gzip.open(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read(8 + n)[8:]
    pixels = head[16:16 + n * 784]
    if (rows, cols) != (28, 28):
        pixels = b"".join(pixels[i * 784:i * 784 + rows * cols] for i in range(n))
    images = struct.pack(">IIII", 2051, n, rows, cols) + pixels
    return images, struct.pack(">II", 2049, n) + labels


if os.path.isdir(FASHION):
    for n, r, c in [(1, 28, 28), (3, 28, 28), (2, 4, 5)]:
        im, lb = idx_pair(n, r, c)
        put("idx", f"fashion-{n}x{r}x{c}", split2(im, lb))
        put("idx", f"fashion-{n}x{r}x{c}-gz", split2(gzip.compress(im), gzip.compress(lb)))
        put("idx_gz", f"fashion-{n}x{r}x{c}", b"\0" + split2(im, lb))
        put("idx_gz", f"fashion-{n}x{r}x{c}-cut", b"\x51" + split2(im, lb))
else:
    print("no Fashion-MNIST: IDX seeds skipped", file=sys.stderr)


def png(w, h, ctype, pixels):
    bpp = {0: 1, 2: 3, 6: 4}[ctype]
    raw = b"".join(b"\0" + pixels[y * w * bpp:(y + 1) * w * bpp] for y in range(h))
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# --- Pictures: two Fashion-MNIST test images (grey 28 x 28) as CIFAR records (RGB, padded to
# 32 x 32) and as colour, grey and RGBA PNGs. Not the CIFAR PNGs of ../shared: the minimised
# corpus (fuzz/replay) is committed, and shared data never is.
if os.path.isdir(FASHION):
    im, lb = idx_pair(2)
    pics = [(im[16 + k * 784:16 + (k + 1) * 784], lb[8 + k]) for k in range(2)]
    records10, records100, colour = b"", b"", []
    for px, label in pics:
        rows = [px[r * 28:(r + 1) * 28] for r in range(28)]
        padded = b"\0" * 64 + b"".join(b"\0\0" + row + b"\0\0" for row in rows) + b"\0" * 64
        planes = padded + bytes(255 - v for v in padded) + padded
        records10 += bytes([label]) + planes
        records100 += bytes([label // 5, label * 10]) + planes
        colour.append(png(28, 28, 2, b"".join(bytes([v, 255 - v, v // 2]) for v in px)))
    for sel in (0, 2):
        put("cifar", f"cifar10-sel{sel}", bytes([sel]) + records10)
        put("cifar", f"cifar100-sel{sel + 1}", bytes([sel + 1]) + records100)
    a, b = colour
    put("image_folder", "png-png", b"\0" + split2(a, b))
    put("image_folder", "png-png-train-test", b"\x10" + split2(a, b))
    # Grey and RGBA PNGs (written here), and real JPEGs: Python's test image and the image
    # crate's progressive test JPEG, where installed.
    grey, _ = pics[1]
    rgba = b"".join(bytes([v, v, 255 - v, 0x80]) for v in grey)
    put("image_folder", "png-greypng", bytes([0 | (3 << 2)]) + split2(a, png(28, 28, 0, grey)))
    put("image_folder", "rgbapng-png", bytes([3]) + split2(png(28, 28, 6, rgba), b))
    jpgs = glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "test", "test_email", "data", "python.jpg"))
    jpgs += glob.glob(os.path.expanduser("~/.cargo/registry/src/*/image-0.2*/tests/images/jpg/progressive/test.jpg"))[:1]
    for i, path in enumerate(jpgs):
        jpg = open(path, "rb").read()
        put("image_folder", f"jpg{i}-png", bytes([1]) + split2(jpg, a))
        put("image_folder", f"jpeg{i}-jpg", bytes([2 | (1 << 2)]) + split2(jpg, jpg))
else:
    print("no Fashion-MNIST: CIFAR and image-folder seeds skipped", file=sys.stderr)

# --- Safetensors, run.json, state.json: the small run in fixtures/.
model = open(os.path.join(FIX, "model-0002.safetensors"), "rb").read()
opt = os.path.join(FIX, "optimizer-0002.safetensors")
for sel in (0, 2):
    put("safetensors", f"model-sel{sel}", bytes([sel]) + model)
if os.path.exists(opt):
    for sel in (1, 3):
        put("safetensors", f"optimizer-sel{sel}", bytes([sel]) + open(opt, "rb").read())
run = open(os.path.join(FIX, "run.json"), "rb").read()
state = open(os.path.join(FIX, "state.json"), "rb").read()
put("run_json", "run", b"\0" + run)
put("run_json", "state", b"\1" + state)
put("run_json", "state-nan", b"\1" + state.replace(b'"test_loss": ', b'"test_loss": "NaN", "x": ', 1))


# --- PyTorch checkpoints written without torch: the pickle that torch.save writes.
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
class FloatStorage: pass
FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage
def _rebuild_tensor_v2(*args): pass
_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
torch._utils = utils
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils


class Storage:
    def __init__(self, key, values):
        self.key, self.values = key, values


class Tensor:
    def __init__(self, key, shape, values):
        self.storage, self.shape = Storage(key, values), tuple(shape)

    def __reduce__(self):
        stride, s = [], 1
        for d in reversed(self.shape):
            stride.insert(0, s); s *= d
        return (_rebuild_tensor_v2,
                (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()))


def tensors():
    conv = [((i * 7) % 13 - 6) / 10 for i in range(16 * 3 * 3 * 3)]
    head = [((i * 5) % 11 - 5) / 10 for i in range(10 * 64)]
    return collections.OrderedDict([
        ("conv1.weight", Tensor("0", (16, 3, 3, 3), conv)),
        ("linear.weight", Tensor("1", (10, 64), head)),
        ("linear.bias", Tensor("2", (10,), [0.1] * 10)),
    ])


def dumps(obj, legacy):
    storages = {}
    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, Storage):
                storages[o.key] = o
                ident = ("storage", FloatStorage, o.key, "cpu", len(o.values))
                return ident + (None,) if legacy else ident
            return None
    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    return buf.getvalue(), storages


def pth(obj):
    pkl, storages = dumps(obj, False)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, s in storages.items():
            z.writestr(f"archive/data/{key}", struct.pack(f"<{len(s.values)}f", *s.values))
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def th(obj):
    out = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, out, protocol=2)
    pkl, storages = dumps(obj, True)
    out.write(pkl)
    keys = sorted(storages)
    pickle.dump(keys, out, protocol=2)
    for k in keys:
        v = storages[k].values
        out.write(struct.pack(f"<q{len(v)}f", len(v), *v))
    return out.getvalue()


plain = tensors()
wrapped = {"state_dict": collections.OrderedDict(("module." + k, v) for k, v in tensors().items()),
           "best_prec1": 91.5, "epoch": 3}
put("checkpoint", "plain.pth", pth(plain))
put("checkpoint", "wrapped.pth", pth(wrapped))
put("checkpoint", "plain.th", th(plain))
put("checkpoint", "wrapped.th", th(wrapped))
put("checkpoint", "model.safetensors", model)

# --- The command line: the README's examples, arguments separated by NUL.
readme = os.path.join(HERE, "..", "README.md")
n = 0
for line in open(readme, encoding="utf-8"):
    line = line.strip().lstrip("$ ").split("#")[0].rstrip(" \\")
    if line.startswith("resnet-ode ") and "…" not in line:
        args = line.split()[1:]
        put("cli", f"readme-{n:02}", b"\0".join(a.encode() for a in args))
        n += 1
for args in (["train", "--lr=-1"], ["train", "--lr", "-1"], ["bench", "memory", "--modes", "bogus"],
             ["experiment", "depth-sweep", "--seeds", "0"], ["--help"], ["train", "--version"]):
    put("cli", "bad-" + "_".join(args).replace("-", "").replace("=", "")[:40], b"\0".join(a.encode() for a in args))
print("seeds written to", OUT)
