// Registration of Stmn>MatchTrans and Stmn>MatchTransGrad with their shape functions.

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace stmn {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

Status GetWindowSide(InferenceContext* c, int64_t* side) {
  int k;
  TF_RETURN_IF_ERROR(c->GetAttr("k", &k));
  if (k < 0) {
    return tensorflow::errors::InvalidArgument("MatchTrans: k must be >= 0, got ", k);
  }
  *side = 2 * static_cast<int64_t>(k) + 1;
  return absl::OkStatus();
}

Status WithRank4(InferenceContext* c, int input, const char* name, ShapeHandle* out) {
  Status s = c->WithRank(c->input(input), 4, out);
  if (!s.ok()) {
    return tensorflow::errors::InvalidArgument("MatchTrans: ", name,
                                               " must be rank 4 [B, H, W, C], got shape ",
                                               c->DebugString(c->input(input)));
  }
  return absl::OkStatus();
}

Status MatchTransShape(InferenceContext* c) {
  int64_t side;
  TF_RETURN_IF_ERROR(GetWindowSide(c, &side));
  ShapeHandle features, prev_features, prev_memory;
  TF_RETURN_IF_ERROR(WithRank4(c, 0, "features", &features));
  TF_RETURN_IF_ERROR(WithRank4(c, 1, "prev_features", &prev_features));
  TF_RETURN_IF_ERROR(WithRank4(c, 2, "prev_memory", &prev_memory));

  // Batch, height and width agree among the three inputs; the feature depths agree.
  ShapeHandle bhw, bhw_prev, bhw_mem;
  TF_RETURN_IF_ERROR(c->Subshape(features, 0, 3, &bhw));
  TF_RETURN_IF_ERROR(c->Subshape(prev_features, 0, 3, &bhw_prev));
  TF_RETURN_IF_ERROR(c->Subshape(prev_memory, 0, 3, &bhw_mem));
  Status s = c->Merge(bhw, bhw_prev, &bhw);
  if (s.ok()) s = c->Merge(bhw, bhw_mem, &bhw);
  if (!s.ok()) {
    return tensorflow::errors::InvalidArgument(
        "MatchTrans: features, prev_features and prev_memory must agree in batch, height "
        "and width, got ",
        c->DebugString(features), ", ", c->DebugString(prev_features), " and ",
        c->DebugString(prev_memory));
  }
  DimensionHandle depth;
  if (!c->Merge(c->Dim(features, 3), c->Dim(prev_features, 3), &depth).ok()) {
    return tensorflow::errors::InvalidArgument(
        "MatchTrans: features and prev_features must have the same depth, got ",
        c->DebugString(features), " and ", c->DebugString(prev_features));
  }
  ShapeHandle aligned, coefficients;
  TF_RETURN_IF_ERROR(
      c->Concatenate(bhw, c->Vector(c->Dim(prev_memory, 3)), &aligned));
  TF_RETURN_IF_ERROR(c->Concatenate(bhw, c->Vector(side * side), &coefficients));
  c->set_output(0, aligned);
  c->set_output(1, coefficients);
  return absl::OkStatus();
}

Status MatchTransGradShape(InferenceContext* c) {
  int64_t side;
  TF_RETURN_IF_ERROR(GetWindowSide(c, &side));
  ShapeHandle coefficients, grad_aligned;
  TF_RETURN_IF_ERROR(WithRank4(c, 0, "coefficients", &coefficients));
  TF_RETURN_IF_ERROR(WithRank4(c, 1, "grad_aligned", &grad_aligned));
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(coefficients, 3), side * side, &unused));
  ShapeHandle bhw, bhw_grad;
  TF_RETURN_IF_ERROR(c->Subshape(coefficients, 0, 3, &bhw));
  TF_RETURN_IF_ERROR(c->Subshape(grad_aligned, 0, 3, &bhw_grad));
  TF_RETURN_IF_ERROR(c->Merge(bhw, bhw_grad, &bhw));
  ShapeHandle out;
  TF_RETURN_IF_ERROR(c->Concatenate(bhw, c->Vector(c->Dim(grad_aligned, 3)), &out));
  c->set_output(0, out);
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("Stmn>MatchTrans")
    .Input("features: T")
    .Input("prev_features: T")
    .Input("prev_memory: T")
    .Output("aligned_memory: T")
    .Output("coefficients: T")
    .Attr("k: int = 2")
    .Attr("affinity_power: float = 1.0")
    .Attr("T: {half, float, double}")
    .SetShapeFn(MatchTransShape)
    .Doc(R"doc(
Aligns a spatial memory to the current frame (Xiao & Lee, ECCV 2018, Sec. 3.3).

features: [B, H, W, C] features of frame t.
prev_features: [B, H, W, C] features of frame t-1.
prev_memory: [B, H, W, D] memory after frame t-1.
aligned_memory: [B, H, W, D] the memory warped by the coefficients.
coefficients: [B, H, W, (2k+1)^2] ReLU'd cosine affinities raised to affinity_power,
  normalised over the in-bounds window; offset (dy, dx) at (dy+k)*(2k+1) + (dx+k).
k: the window radius.
affinity_power: finite, > 0. 1 is the authors' formula; larger values sharpen the
  window when every cosine is positive (non-negative features).
)doc");

REGISTER_OP("Stmn>MatchTransGrad")
    .Input("coefficients: T")
    .Input("grad_aligned_memory: T")
    .Output("grad_prev_memory: T")
    .Attr("k: int = 2")
    .Attr("T: {half, float, double}")
    .SetShapeFn(MatchTransGradShape)
    .Doc(R"doc(
Gradient of Stmn>MatchTrans with respect to prev_memory (the features get none).
)doc");

}  // namespace stmn
