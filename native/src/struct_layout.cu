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

#define MAMBA_FIELD(S, f) Field{#f, offsetof(S, f), sizeof(S::f)}

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

constexpr Field kAddRmsNorm[] = {
    MAMBA_FIELD(mamba_add_rmsnorm_params, struct_size), MAMBA_FIELD(mamba_add_rmsnorm_params, residual_dtype),
    MAMBA_FIELD(mamba_add_rmsnorm_params, delta_dtype), MAMBA_FIELD(mamba_add_rmsnorm_params, weight_dtype),
    MAMBA_FIELD(mamba_add_rmsnorm_params, out_dtype),   MAMBA_FIELD(mamba_add_rmsnorm_params, epsilon),
    MAMBA_FIELD(mamba_add_rmsnorm_params, rows),        MAMBA_FIELD(mamba_add_rmsnorm_params, dim),
    MAMBA_FIELD(mamba_add_rmsnorm_params, residual),    MAMBA_FIELD(mamba_add_rmsnorm_params, delta),
    MAMBA_FIELD(mamba_add_rmsnorm_params, weight),      MAMBA_FIELD(mamba_add_rmsnorm_params, out)};
static_assert(tiles(kAddRmsNorm, sizeof(mamba_add_rmsnorm_params)), "kAddRmsNorm must list every field of mamba_add_rmsnorm_params");

constexpr Field kLinear[] = {
    MAMBA_FIELD(mamba_linear_params, struct_size), MAMBA_FIELD(mamba_linear_params, x_dtype), MAMBA_FIELD(mamba_linear_params, w_dtype),
    MAMBA_FIELD(mamba_linear_params, bias_dtype),  MAMBA_FIELD(mamba_linear_params, y_dtype), MAMBA_FIELD(mamba_linear_params, reserved),
    MAMBA_FIELD(mamba_linear_params, m),           MAMBA_FIELD(mamba_linear_params, n),       MAMBA_FIELD(mamba_linear_params, k),
    MAMBA_FIELD(mamba_linear_params, x),           MAMBA_FIELD(mamba_linear_params, w),       MAMBA_FIELD(mamba_linear_params, bias),
    MAMBA_FIELD(mamba_linear_params, y)};
static_assert(tiles(kLinear, sizeof(mamba_linear_params)), "kLinear must list every field of mamba_linear_params");

constexpr Field kCausalConv1d[] = {
    MAMBA_FIELD(mamba_causal_conv1d_params, struct_size), MAMBA_FIELD(mamba_causal_conv1d_params, act_dtype),
    MAMBA_FIELD(mamba_causal_conv1d_params, weight_dtype), MAMBA_FIELD(mamba_causal_conv1d_params, bias_dtype),
    MAMBA_FIELD(mamba_causal_conv1d_params, state_dtype), MAMBA_FIELD(mamba_causal_conv1d_params, batch),
    MAMBA_FIELD(mamba_causal_conv1d_params, length),      MAMBA_FIELD(mamba_causal_conv1d_params, channels),
    MAMBA_FIELD(mamba_causal_conv1d_params, width),       MAMBA_FIELD(mamba_causal_conv1d_params, reserved),
    MAMBA_FIELD(mamba_causal_conv1d_params, xz),          MAMBA_FIELD(mamba_causal_conv1d_params, weight),
    MAMBA_FIELD(mamba_causal_conv1d_params, bias),        MAMBA_FIELD(mamba_causal_conv1d_params, mask),
    MAMBA_FIELD(mamba_causal_conv1d_params, u),           MAMBA_FIELD(mamba_causal_conv1d_params, conv_state)};
static_assert(tiles(kCausalConv1d, sizeof(mamba_causal_conv1d_params)), "kCausalConv1d must list every field of mamba_causal_conv1d_params");

constexpr Field kSelectiveScan[] = {
    MAMBA_FIELD(mamba_selective_scan_params, struct_size),     MAMBA_FIELD(mamba_selective_scan_params, act_dtype),
    MAMBA_FIELD(mamba_selective_scan_params, dt_weight_dtype), MAMBA_FIELD(mamba_selective_scan_params, dt_bias_dtype),
    MAMBA_FIELD(mamba_selective_scan_params, batch),           MAMBA_FIELD(mamba_selective_scan_params, length),
    MAMBA_FIELD(mamba_selective_scan_params, channels),        MAMBA_FIELD(mamba_selective_scan_params, d_state),
    MAMBA_FIELD(mamba_selective_scan_params, dt_rank),         MAMBA_FIELD(mamba_selective_scan_params, reserved),
    MAMBA_FIELD(mamba_selective_scan_params, u),               MAMBA_FIELD(mamba_selective_scan_params, dbc),
    MAMBA_FIELD(mamba_selective_scan_params, xz),              MAMBA_FIELD(mamba_selective_scan_params, y),
    MAMBA_FIELD(mamba_selective_scan_params, dt_weight),       MAMBA_FIELD(mamba_selective_scan_params, dt_bias),
    MAMBA_FIELD(mamba_selective_scan_params, A),               MAMBA_FIELD(mamba_selective_scan_params, D),
    MAMBA_FIELD(mamba_selective_scan_params, state)};
static_assert(tiles(kSelectiveScan, sizeof(mamba_selective_scan_params)), "kSelectiveScan must list every field of mamba_selective_scan_params");

constexpr Field kDecodeLayer[] = {
    MAMBA_FIELD(mamba_decode_layer, struct_size),    MAMBA_FIELD(mamba_decode_layer, reserved),       MAMBA_FIELD(mamba_decode_layer, norm_weight),
    MAMBA_FIELD(mamba_decode_layer, in_proj_weight), MAMBA_FIELD(mamba_decode_layer, in_proj_bias),   MAMBA_FIELD(mamba_decode_layer, conv_weight),
    MAMBA_FIELD(mamba_decode_layer, conv_bias),      MAMBA_FIELD(mamba_decode_layer, conv_state),     MAMBA_FIELD(mamba_decode_layer, x_proj_weight),
    MAMBA_FIELD(mamba_decode_layer, dt_proj_weight), MAMBA_FIELD(mamba_decode_layer, dt_proj_bias),   MAMBA_FIELD(mamba_decode_layer, A),
    MAMBA_FIELD(mamba_decode_layer, D),              MAMBA_FIELD(mamba_decode_layer, ssm_state),      MAMBA_FIELD(mamba_decode_layer, out_proj_weight),
    MAMBA_FIELD(mamba_decode_layer, out_proj_bias)};
static_assert(tiles(kDecodeLayer, sizeof(mamba_decode_layer)), "kDecodeLayer must list every field of mamba_decode_layer");

constexpr Field kDecodeModel[] = {
    MAMBA_FIELD(mamba_decode_model, struct_size), MAMBA_FIELD(mamba_decode_model, num_layers),       MAMBA_FIELD(mamba_decode_model, hidden),
    MAMBA_FIELD(mamba_decode_model, inner),       MAMBA_FIELD(mamba_decode_model, state),            MAMBA_FIELD(mamba_decode_model, rank),
    MAMBA_FIELD(mamba_decode_model, conv_kernel), MAMBA_FIELD(mamba_decode_model, vocab),            MAMBA_FIELD(mamba_decode_model, dtype),
    MAMBA_FIELD(mamba_decode_model, conv_state_dtype), MAMBA_FIELD(mamba_decode_model, eps),         MAMBA_FIELD(mamba_decode_model, reserved),
    MAMBA_FIELD(mamba_decode_model, embedding),   MAMBA_FIELD(mamba_decode_model, norm_f),           MAMBA_FIELD(mamba_decode_model, lm_head),
    MAMBA_FIELD(mamba_decode_model, layers)};
static_assert(tiles(kDecodeModel, sizeof(mamba_decode_model)), "kDecodeModel must list every field of mamba_decode_model");

#undef MAMBA_FIELD

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
    info("mamba_add_rmsnorm_params", sizeof(mamba_add_rmsnorm_params), kAddRmsNorm),
    info("mamba_linear_params", sizeof(mamba_linear_params), kLinear),
    info("mamba_causal_conv1d_params", sizeof(mamba_causal_conv1d_params), kCausalConv1d),
    info("mamba_selective_scan_params", sizeof(mamba_selective_scan_params), kSelectiveScan),
    info("mamba_decode_layer", sizeof(mamba_decode_layer), kDecodeLayer),
    info("mamba_decode_model", sizeof(mamba_decode_model), kDecodeModel),
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
