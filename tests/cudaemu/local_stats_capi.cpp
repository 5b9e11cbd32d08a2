// C entry points over cuda/local_stats/local_stats.h for the emulation tests (tests/cudaemu/emu.py).
#include <cstdint>

#include "cuda/local_stats/local_stats.h"

using namespace facekernels::cuda;

namespace {
LocalStatsShape shape_of(int64_t planes, int64_t h, int64_t w, int64_t r) { return LocalStatsShape{planes, h, w, r}; }
}  // namespace

extern "C" {

int64_t emu_lst_forward_workspace(int64_t p, int64_t h, int64_t w, int64_t r) {
  return local_stat_transform_forward_workspace_size(shape_of(p, h, w, r));
}
int64_t emu_lst_backward_workspace(int64_t p, int64_t h, int64_t w, int64_t r, int64_t need_x, int64_t need_g) {
  return local_stat_transform_backward_workspace_size(shape_of(p, h, w, r), need_x != 0, need_g != 0);
}
int64_t emu_lmv_forward_workspace(int64_t p, int64_t h, int64_t w, int64_t r) {
  return local_mean_var_forward_workspace_size(shape_of(p, h, w, r));
}
int64_t emu_lmv_backward_workspace(int64_t p, int64_t h, int64_t w, int64_t r, int64_t has_m, int64_t has_v) {
  return local_mean_var_backward_workspace_size(shape_of(p, h, w, r), has_m != 0, has_v != 0);
}

int emu_lst_forward(const void* x, const void* guide, void* out, void* ws, int64_t p, int64_t h, int64_t w, int64_t r,
                    double eps, int64_t dtype) {
  LocalStatTransformParams q{};
  q.x = x;
  q.guide = guide;
  q.out = out;
  q.workspace = static_cast<float*>(ws);
  q.shape = shape_of(p, h, w, r);
  q.eps = static_cast<float>(eps);
  q.dtype = static_cast<DType>(dtype);
  return local_stat_transform_forward(q, nullptr);
}
int emu_lst_backward(const void* gout, const void* x, const void* guide, void* gx, void* gg, void* ws, int64_t p,
                     int64_t h, int64_t w, int64_t r, double eps, int64_t dtype) {
  LocalStatTransformParams q{};
  q.grad_out = gout;
  q.x = x;
  q.guide = guide;
  q.grad_x = gx;
  q.grad_guide = gg;
  q.workspace = static_cast<float*>(ws);
  q.shape = shape_of(p, h, w, r);
  q.eps = static_cast<float>(eps);
  q.dtype = static_cast<DType>(dtype);
  return local_stat_transform_backward(q, nullptr);
}
int emu_lmv_forward(const void* x, void* mean, void* var, void* ws, int64_t p, int64_t h, int64_t w, int64_t r,
                    int64_t dtype) {
  LocalMeanVarParams q{};
  q.x = x;
  q.mean = mean;
  q.var = var;
  q.workspace = static_cast<float*>(ws);
  q.shape = shape_of(p, h, w, r);
  q.dtype = static_cast<DType>(dtype);
  return local_mean_var_forward(q, nullptr);
}
int emu_lmv_backward(const void* gm, const void* gv, const void* x, void* gx, void* ws, int64_t p, int64_t h,
                     int64_t w, int64_t r, int64_t dtype) {
  LocalMeanVarParams q{};
  q.grad_mean = gm;
  q.grad_var = gv;
  q.x = x;
  q.grad_x = gx;
  q.workspace = static_cast<float*>(ws);
  q.shape = shape_of(p, h, w, r);
  q.dtype = static_cast<DType>(dtype);
  return local_mean_var_backward(q, nullptr);
}

}  // extern "C"
