// ATen functions that tch 0.22 does not bind, for `src/ops/aten/mod.rs`: the convolution's and
// batch normalisation's own backward kernels (oneDNN or ATen's fused CPU/CUDA loops), the ones
// PyTorch's autograd calls, and PyTorch's profiler (`bench train --trace`). Tensors cross as tch's handles (`at::Tensor*`); results are new
// handles that tch's `Tensor` owns and frees. An ATen error becomes a non-zero return and its
// message in `err`.

#include <ATen/ATen.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <array>
#include <cstring>
#include <exception>
#include <set>
#include <vector>

namespace {

void put(at::Tensor t, at::Tensor **slot) {
  *slot = t.defined() ? new at::Tensor(std::move(t)) : nullptr;
}

int fail(const std::exception &e, char *err, size_t len) {
  if (len > 0) {
    std::strncpy(err, e.what(), len - 1);
    err[len - 1] = '\0';
  }
  return 1;
}

} // namespace

extern "C" {

// Gradients of the 3x3 "same" convolution (stride 1, padding 1, one group) with respect to
// the input (mask bit 0), the weight (bit 1) and the bias (bit 2), into out[0..3].
int rode_conv3x3_backward(const at::Tensor *x, const at::Tensor *weight, const at::Tensor *grad,
                          int mask, at::Tensor **out, char *err, size_t len) {
  try {
    std::array<bool, 3> m{(mask & 1) != 0, (mask & 2) != 0, (mask & 4) != 0};
    std::vector<int64_t> bias_sizes{weight->size(0)};
    auto r = at::convolution_backward(*grad, *x, *weight, at::IntArrayRef(bias_sizes), {1, 1},
                                      {1, 1}, {1, 1}, false, {0, 0}, 1, m);
    put(std::get<0>(r), &out[0]);
    put(std::get<1>(r), &out[1]);
    put(std::get<2>(r), &out[2]);
    return 0;
  } catch (const std::exception &e) {
    return fail(e, err, len);
  }
}

// (dx, dgamma, dbeta) of y = gamma (x - mean)/sqrt(var + eps) + beta (then a ReLU whose output
// is `relu_out`, or none when null), differentiated as batch normalisation over every dimension
// but 1 at x's own statistics. `spread` is var, or with `is_invstd` 1/sqrt(var + eps) as ATen's
// training forward saved it (no `add` and `rsqrt` then). When `given` is set the statistics are
// not x's own (the adjoint's cached ones): ATen's backward centres on `mean`, so dx is moved per
// channel to centre on x's own mean instead (the straight-through derivative, see
// batch_norm/kernel.rs).
int rode_bn_backward(const at::Tensor *x, const at::Tensor *gamma, const at::Tensor *mean,
                     const at::Tensor *spread, int is_invstd, const at::Tensor *relu_out,
                     const at::Tensor *grad, double eps, int given, at::Tensor **out, char *err,
                     size_t len) {
  try {
    at::Tensor g = relu_out ? at::threshold_backward(*grad, *relu_out, 0) : *grad;
    at::Tensor invstd = is_invstd ? *spread : (*spread + eps).rsqrt();
    auto r = at::native_batch_norm_backward(g, *x, *gamma, {}, {}, *mean, invstd, true, eps,
                                            {true, true, true});
    at::Tensor dx = std::get<0>(r), dgamma = std::get<1>(r), dbeta = std::get<2>(r);
    if (given) {
      std::vector<int64_t> dims, shape(x->dim(), 1);
      for (int64_t d = 0; d < x->dim(); ++d) {
        if (d != 1) dims.push_back(d);
      }
      shape[1] = x->size(1);
      const double count = static_cast<double>(x->numel() / x->size(1));
      // dx_ours - dx_ATen = (mu - mean) * gamma * sum(g (x - mean)) / (count s^3), and ATen's
      // dgamma is sum(g (x - mean)) / s: one fused multiply-add into dx of two per-channel
      // factors (six ATen ops where a chain of products took eight, each a kernel on CUDA).
      at::Tensor a = (x->mean(dims) - *mean) * (*gamma * invstd);
      dx.addcmul_(a.view(shape), (dgamma * invstd).view(shape), 1.0 / count);
    }
    put(dx, &out[0]);
    put(dgamma, &out[1]);
    put(dbeta, &out[2]);
    return 0;
  } catch (const std::exception &e) {
    return fail(e, err, len);
  }
}

// One SGD step with momentum of n tensors, PyTorch's rule: d = g + wd w; b' = momentum b + d;
// s = nesterov ? d + momentum b' : b'; w' = w - lr s. out = {w'_0..w'_{n-1}, b'_0..b'_{n-1}}.
// ATen's multi-tensor ops, as PyTorch's `foreach` SGD: on CUDA a few kernels for the whole list
// (one per chunk of tensors); on the CPU a loop of the per-tensor ops. Each line is one `add`
// with `alpha` per tensor, so the values are those of the per-tensor rule, to the bit. Out of
// place: a parameter may share its storage with another module's (`params::independent_copy`).
int rode_sgd_steps(const at::Tensor *const *w, const at::Tensor *const *g,
                   const at::Tensor *const *b, size_t n, double lr, double wd, double momentum,
                   int nesterov, at::Tensor **out, char *err, size_t len) {
  try {
    auto list = [n](const at::Tensor *const *t) {
      std::vector<at::Tensor> v;
      v.reserve(n);
      for (size_t i = 0; i < n; ++i) v.push_back(*t[i]);
      return v;
    };
    std::vector<at::Tensor> ws = list(w), gs = list(g), bs = list(b);
    std::vector<at::Tensor> d = wd > 0 ? at::_foreach_add(gs, ws, wd) : gs;
    std::vector<at::Tensor> nb = at::_foreach_add(d, bs, momentum);
    std::vector<at::Tensor> s = nesterov ? at::_foreach_add(d, nb, momentum) : nb;
    std::vector<at::Tensor> nw = at::_foreach_sub(ws, s, lr);
    for (size_t i = 0; i < n; ++i) {
      put(nw[i], &out[i]);
      put(nb[i], &out[n + i]);
    }
    return 0;
  } catch (const std::exception &e) {
    return fail(e, err, len);
  }
}

// Starts PyTorch's own profiler (Kineto, what `torch.profiler` runs) on the calling thread:
// every ATen operation and, with `cuda`, every CUDA kernel, copy and runtime call, so that a
// step of ours and one of PyTorch's are traced by the same instrument.
int rode_profile_start(int cuda, char *err, size_t len) {
  try {
    using torch::profiler::impl::ActivityType;
    using torch::profiler::impl::ProfilerConfig;
    using torch::profiler::impl::ProfilerState;
    std::set<ActivityType> activities{ActivityType::CPU};
    if (cuda) activities.insert(ActivityType::CUDA);
    ProfilerConfig config(ProfilerState::KINETO);
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
    return 0;
  } catch (const std::exception &e) {
    return fail(e, err, len);
  }
}

// Stops the profiler `rode_profile_start` started and writes its Chrome trace (JSON) to `path`.
int rode_profile_stop(const char *path, char *err, size_t len) {
  try {
    torch::autograd::profiler::disableProfiler()->save(path);
    return 0;
  } catch (const std::exception &e) {
    return fail(e, err, len);
  }
}

} // extern "C"
