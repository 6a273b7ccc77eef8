// mamba_struct_layout / mamba_struct_name: the size and field offsets of every parameter struct of mamba.h as this
// library was compiled, so a binding (the C# mirrors in managed/Mamba/Native/NativeStructs.cs) can be tested against
// them without a device. Each table is checked at compile time to list every field in order with no gap, so a field
// added to mamba.h and not here fails the build.
#include "common.cuh"

#include <cstring>

namespace mamba {
namespace {

struct Field {
  const char* name;
  size_t offset;
  size_t size;
};

// F(f): field f of S, the struct a table's namespace names.
#define F(f) Field{#f, offsetof(S, f), sizeof(S::f)}

// True when the fields tile [0, total) in order: no field left out, none out of order, no padding.
template <size_t N>
constexpr bool tiles(const Field (&fields)[N], size_t total) {
  size_t end = 0;
  for (size_t i = 0; i < N; ++i) {
    if (fields[i].offset != end) return false;
    end = fields[i].offset + fields[i].size;
  }
  return end == total;
}

namespace add_rmsnorm {
using S = mamba_add_rmsnorm_params;
constexpr Field kFields[] = {F(struct_size), F(residual_dtype), F(delta_dtype), F(weight_dtype), F(out_dtype), F(epsilon),
                             F(rows),        F(dim),            F(residual),    F(delta),        F(weight),    F(out)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_add_rmsnorm_params, in order");
}  // namespace add_rmsnorm

namespace linear {
using S = mamba_linear_params;
constexpr Field kFields[] = {F(struct_size), F(x_dtype), F(w_dtype), F(bias_dtype), F(y_dtype), F(reserved), F(m),
                             F(n),           F(k),       F(x),       F(w),          F(bias),    F(y)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_linear_params, in order");
}  // namespace linear

namespace causal_conv1d {
using S = mamba_causal_conv1d_params;
constexpr Field kFields[] = {F(struct_size), F(act_dtype), F(weight_dtype), F(bias_dtype), F(state_dtype), F(batch), F(length), F(channels),
                             F(width),       F(reserved),  F(xz),           F(weight),     F(bias),        F(mask),  F(u),      F(conv_state)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_causal_conv1d_params, in order");
}  // namespace causal_conv1d

namespace selective_scan {
using S = mamba_selective_scan_params;
constexpr Field kFields[] = {F(struct_size), F(act_dtype), F(dt_weight_dtype), F(dt_bias_dtype), F(batch), F(length), F(channels),
                             F(d_state),     F(dt_rank),   F(reserved),        F(u),             F(dbc),   F(xz),     F(y),
                             F(dt_weight),   F(dt_bias),   F(A),               F(D),             F(state),
                             F(checkpoints)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_selective_scan_params, in order");
}  // namespace selective_scan

namespace decode_layer {
using S = mamba_decode_layer;
constexpr Field kFields[] = {F(struct_size),    F(reserved),       F(norm_weight),  F(in_proj_weight), F(in_proj_bias),
                             F(conv_weight),    F(conv_bias),      F(conv_state),   F(x_proj_weight),  F(dt_proj_weight),
                             F(dt_proj_bias),   F(A),              F(D),            F(ssm_state),      F(out_proj_weight),
                             F(out_proj_bias)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_decode_layer, in order");
}  // namespace decode_layer

namespace decode_model {
using S = mamba_decode_model;
constexpr Field kFields[] = {F(struct_size), F(num_layers), F(hidden),    F(inner),     F(state),  F(rank),    F(conv_kernel), F(vocab),
                             F(dtype),       F(conv_state_dtype), F(eps), F(reserved),  F(embedding), F(norm_f), F(lm_head),   F(layers)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_decode_model, in order");
}  // namespace decode_model

namespace add_rmsnorm_grads {
using S = mamba_add_rmsnorm_grads;
constexpr Field kFields[] = {F(struct_size), F(grad_out_dtype), F(grad_out), F(grad_input), F(grad_weight)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_add_rmsnorm_grads, in order");
}  // namespace add_rmsnorm_grads

namespace linear_grads {
using S = mamba_linear_grads;
constexpr Field kFields[] = {F(struct_size), F(grad_y_dtype), F(grad_x_dtype), F(accumulate_grad_x), F(grad_y), F(grad_x), F(grad_w), F(grad_bias)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_linear_grads, in order");
}  // namespace linear_grads

namespace causal_conv1d_grads {
using S = mamba_causal_conv1d_grads;
constexpr Field kFields[] = {F(struct_size), F(grad_u_dtype), F(grad_xz_dtype), F(reserved), F(grad_u), F(grad_xz), F(grad_weight), F(grad_bias)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_causal_conv1d_grads, in order");
}  // namespace causal_conv1d_grads

namespace selective_scan_grads {
using S = mamba_selective_scan_grads;
constexpr Field kFields[] = {F(struct_size), F(grad_y_dtype), F(grad_u_dtype),   F(grad_dbc_dtype), F(grad_xz_dtype), F(reserved), F(grad_y),
                             F(grad_u),      F(grad_dbc),     F(grad_xz),        F(grad_dt_weight), F(grad_dt_bias),  F(grad_A_log), F(grad_D)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_selective_scan_grads, in order");
}  // namespace selective_scan_grads

namespace linear_cross_entropy {
using S = mamba_linear_cross_entropy_params;
constexpr Field kFields[] = {F(struct_size), F(hidden_dtype), F(weight_dtype), F(ignore_index), F(grad_scale), F(reserved), F(rows), F(vocab), F(dim),
                             F(hidden),      F(weight),       F(host_targets), F(grad_hidden),  F(grad_weight), F(loss_sum), F(count)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_linear_cross_entropy_params, in order");
}  // namespace linear_cross_entropy

namespace adamw {
using S = mamba_adamw_params;
constexpr Field kFields[] = {F(struct_size), F(param_dtype), F(neg_exp), F(lr), F(beta1), F(beta2), F(eps), F(weight_decay), F(bias_correction1),
                             F(bias_correction2), F(grad_scale), F(reserved), F(count), F(master), F(grad), F(m), F(v), F(param)};
static_assert(tiles(kFields, sizeof(S)), "list every field of mamba_adamw_params, in order");
}  // namespace adamw

#undef F

struct StructInfo {
  const char* name;
  size_t size;
  const Field* fields;
  int count;
};

template <size_t N>
constexpr StructInfo info(const char* name, size_t size, const Field (&fields)[N]) {
  return StructInfo{name, size, fields, static_cast<int>(N)};
}

constexpr StructInfo kStructs[] = {
    info("mamba_add_rmsnorm_params", sizeof(add_rmsnorm::S), add_rmsnorm::kFields),
    info("mamba_linear_params", sizeof(linear::S), linear::kFields),
    info("mamba_causal_conv1d_params", sizeof(causal_conv1d::S), causal_conv1d::kFields),
    info("mamba_selective_scan_params", sizeof(selective_scan::S), selective_scan::kFields),
    info("mamba_decode_layer", sizeof(decode_layer::S), decode_layer::kFields),
    info("mamba_decode_model", sizeof(decode_model::S), decode_model::kFields),
    info("mamba_add_rmsnorm_grads", sizeof(add_rmsnorm_grads::S), add_rmsnorm_grads::kFields),
    info("mamba_linear_grads", sizeof(linear_grads::S), linear_grads::kFields),
    info("mamba_causal_conv1d_grads", sizeof(causal_conv1d_grads::S), causal_conv1d_grads::kFields),
    info("mamba_selective_scan_grads", sizeof(selective_scan_grads::S), selective_scan_grads::kFields),
    info("mamba_linear_cross_entropy_params", sizeof(linear_cross_entropy::S), linear_cross_entropy::kFields),
    info("mamba_adamw_params", sizeof(adamw::S), adamw::kFields),
};
constexpr int kStructCount = static_cast<int>(sizeof(kStructs) / sizeof(kStructs[0]));

}  // namespace
}  // namespace mamba

using namespace mamba;

extern "C" MAMBA_API const char* mamba_struct_name(int32_t index) { return index >= 0 && index < kStructCount ? kStructs[index].name : nullptr; }

extern "C" MAMBA_API mamba_status mamba_struct_layout(const char* name, int64_t* size, int64_t* offsets, const char** field_names, int32_t capacity,
                                                      int32_t* count) {
  return guard("mamba_struct_layout", [&] { return name ? format("(%s)", name) : std::string(); }, [&] {
    require(name && size && count, "null pointer");
    require(capacity >= 0, "negative capacity");
    for (const StructInfo& s : kStructs) {
      if (std::strcmp(s.name, name) != 0) continue;
      *size = static_cast<int64_t>(s.size);
      *count = s.count;
      for (int i = 0; i < s.count && i < capacity; ++i) {
        if (offsets) offsets[i] = static_cast<int64_t>(s.fields[i].offset);
        if (field_names) field_names[i] = s.fields[i].name;
      }
      return;
    }
    fail(MAMBA_ERR_INVALID_ARGUMENT, format("unknown struct '%s'", name));
  });
}
