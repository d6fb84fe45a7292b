//===- CudnnAttention.cpp - cuDNN SDPA graphs, plans and their cache --------===//
#include "runtime/cuda/CudnnAttention.h"

#include "runtime/ByteSize.h"
#include "runtime/cuda/CudaStatus.h"
#include "runtime/cuda/CudnnLibrary.h"

#include <fmt/format.h>

#include <cfloat>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

namespace qlora::cuda {
namespace {

//===----------------------------------------------------------------------===//
// Building an operation graph
//===----------------------------------------------------------------------===//

using Dims = std::vector<int64_t>;
using Descriptor = cudnnBackendDescriptor_t;

/// Owns the descriptors of one operation graph and its plan. Calls after
/// the first failure do nothing, so a graph reads as straight-line code and
/// its first error is kept.
class GraphBuilder {
public:
  explicit GraphBuilder(const CudnnLibrary &api) : api_(api) {}
  GraphBuilder(const GraphBuilder &) = delete;
  GraphBuilder &operator=(const GraphBuilder &) = delete;
  ~GraphBuilder() {
    for (auto it = owned_.rbegin(); it != owned_.rend(); ++it)
      api_.destroyDescriptor(*it);
  }

  bool ok() const { return error_.empty(); }
  const std::string &error() const { return error_; }

  /// A tensor the variant pack binds to memory by `uid`.
  Descriptor tensor(int64_t uid, cudnnDataType_t type, const Dims &dims,
                    const Dims &strides, bool f16x16 = false) {
    return makeTensor(uid, type, dims, strides, /*isVirtual=*/false,
                      /*byValue=*/false, f16x16);
  }
  /// An fp32 scalar passed by value through the variant pack.
  Descriptor scalar(int64_t uid) {
    return makeTensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1},
                      false, /*byValue=*/true, false);
  }
  /// An intermediate that never reaches memory.
  Descriptor intermediate(cudnnDataType_t type, const Dims &dims,
                          const Dims &strides) {
    return makeTensor(nextVirtual_++, type, dims, strides, /*isVirtual=*/true,
                      false, false);
  }

  /// y = mode(x[, b[, t]]) elementwise, computed in `math`; returns y.
  Descriptor pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t math,
                       Descriptor x, Descriptor b, Descriptor t, Descriptor y,
                       int64_t axis = -1) {
    Descriptor desc = create(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise");
    set(desc, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    set(desc, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    if (axis >= 0)
      set(desc, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    finalize(desc, "a pointwise descriptor");
    operation(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise",
              {{CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, desc},
               {CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x},
               {CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b},
               {CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t},
               {CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y}});
    return y;
  }
  Descriptor unary(cudnnPointwiseMode_t mode, Descriptor x, Descriptor y) {
    return pointwise(mode, CUDNN_DATA_FLOAT, x, nullptr, nullptr, y);
  }
  Descriptor binary(cudnnPointwiseMode_t mode, Descriptor x, Descriptor b,
                    Descriptor y) {
    return pointwise(mode, CUDNN_DATA_FLOAT, x, b, nullptr, y);
  }

  /// c = a @ b over the last two dimensions, batched over the first two.
  Descriptor matmul(Descriptor a, Descriptor b, Descriptor c) {
    Descriptor desc = create(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul");
    cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    set(desc, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
    finalize(desc, "a matmul descriptor");
    operation(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul",
              {{CUDNN_ATTR_OPERATION_MATMUL_ADESC, a},
               {CUDNN_ATTR_OPERATION_MATMUL_BDESC, b},
               {CUDNN_ATTR_OPERATION_MATMUL_CDESC, c},
               {CUDNN_ATTR_OPERATION_MATMUL_DESC, desc}});
    return c;
  }

  /// y = x reduced by `op` over the dimensions where y has extent 1.
  Descriptor reduction(cudnnReduceTensorOp_t op, Descriptor x, Descriptor y) {
    Descriptor desc = create(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction");
    cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    set(desc, CUDNN_ATTR_REDUCTION_OPERATOR,
        CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &op);
    set(desc, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1,
        &compute);
    finalize(desc, "a reduction descriptor");
    operation(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction",
              {{CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x},
               {CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y},
               {CUDNN_ATTR_OPERATION_REDUCTION_DESC, desc}});
    return y;
  }

  /// y = x seen through y's dimensions and strides.
  Descriptor reshape(Descriptor x, Descriptor y) {
    operation(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape",
              {{CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x},
               {CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y}});
    return y;
  }

  /// Finalizes the graph of every operation so far and the execution plan
  /// of the first engine configuration cuDNN's heuristics rank that builds;
  /// nullptr (and error()) when none does.
  Descriptor plan(cudnnHandle_t handle, int64_t *workspaceBytes) {
    Descriptor graph =
        create(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
    set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1,
        &handle);
    set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
        int64_t(ops_.size()), ops_.data());
    finalize(graph, "the operation graph");
    Descriptor heuristics =
        create(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "engine heuristics");
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    setDescriptor(heuristics, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
    set(heuristics, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1,
        &mode);
    finalize(heuristics, "the engine heuristics");
    if (!ok())
      return nullptr;
    int64_t count = 0;
    check(api_.getAttribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                            CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr),
          "querying the engine heuristics' results");
    if (ok() && count == 0)
      error_ = "cuDNN's heuristics offer no engine for this graph";
    std::vector<Descriptor> configs;
    for (int64_t i = 0; ok() && i < count; ++i)
      configs.push_back(create(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "config"));
    int64_t returned = 0;
    if (ok())
      check(api_.getAttribute(heuristics, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                              CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &returned,
                              configs.data()),
            "reading the engine heuristics' results");
    std::string rejections;
    for (int64_t i = 0; ok() && i < returned; ++i) {
      Descriptor plan = create(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "plan");
      set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1,
          &handle);
      setDescriptor(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[i]);
      if (!ok())
        return nullptr;
      cudnnStatus_t built = api_.finalize(plan);
      if (built != CUDNN_STATUS_SUCCESS) {
        rejections += fmt::format("\n  engine config {}: {}", i,
                                  api_.describe("finalizing its plan", built));
        continue;
      }
      int64_t got = 0;
      check(api_.getAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                              CUDNN_TYPE_INT64, 1, &got, workspaceBytes),
            "reading the plan's workspace size");
      return ok() ? plan : nullptr;
    }
    if (ok())
      error_ = "no engine cuDNN offers builds a plan for this graph" +
               rejections;
    return nullptr;
  }

private:
  /// An operation of the graph from its descriptor attributes (null ones
  /// left unset).
  void operation(
      cudnnBackendDescriptorType_t type, const char *what,
      std::initializer_list<std::pair<cudnnBackendAttributeName_t, Descriptor>>
          attributes) {
    Descriptor op = create(type, what);
    for (auto [name, value] : attributes)
      if (value)
        setDescriptor(op, name, value);
    finalize(op, (std::string("a ") + what + " operation").c_str());
    ops_.push_back(op);
  }

  Descriptor makeTensor(int64_t uid, cudnnDataType_t type, const Dims &dims,
                        const Dims &strides, bool isVirtual, bool byValue,
                        bool f16x16) {
    Descriptor desc = create(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor");
    int64_t alignment = byValue ? 4 : 16;
    set(desc, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set(desc, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    set(desc, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1,
        &alignment);
    set(desc, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64,
        int64_t(dims.size()), dims.data());
    set(desc, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64,
        int64_t(strides.size()), strides.data());
    bool flag = isVirtual;
    set(desc, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &flag);
    if (byValue) {
      flag = true;
      set(desc, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &flag);
    }
    if (f16x16) {
      cudnnBackendTensorReordering_t reorder = CUDNN_TENSOR_REORDERING_F16x16;
      set(desc, CUDNN_ATTR_TENSOR_REORDERING_MODE,
          CUDNN_TYPE_TENSOR_REORDERING_MODE, 1, &reorder);
    }
    finalize(desc, "a tensor descriptor");
    return desc;
  }

  Descriptor create(cudnnBackendDescriptorType_t type, const char *what) {
    if (!ok())
      return nullptr;
    Descriptor desc = nullptr;
    cudnnStatus_t status = api_.createDescriptor(type, &desc);
    if (status != CUDNN_STATUS_SUCCESS) {
      error_ = api_.describe(
          fmt::format("creating a {} descriptor", what).c_str(), status);
      return nullptr;
    }
    owned_.push_back(desc);
    return desc;
  }
  void set(Descriptor desc, cudnnBackendAttributeName_t name,
           cudnnBackendAttributeType_t type, int64_t count,
           const void *value) {
    if (ok())
      check(api_.setAttribute(desc, name, type, count, value),
            fmt::format("setting attribute {}", int(name)));
  }
  void setDescriptor(Descriptor desc, cudnnBackendAttributeName_t name,
                     Descriptor value) {
    set(desc, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value);
  }
  void finalize(Descriptor desc, const char *what) {
    if (ok())
      check(api_.finalize(desc), fmt::format("finalizing {}", what));
  }
  void check(cudnnStatus_t status, const std::string &what) {
    if (status != CUDNN_STATUS_SUCCESS && ok())
      error_ = api_.describe(what.c_str(), status);
  }

  const CudnnLibrary &api_;
  std::vector<Descriptor> owned_;
  std::vector<Descriptor> ops_;
  std::string error_;
  int64_t nextVirtual_ = 1000;
};

//===----------------------------------------------------------------------===//
// The two graphs
//===----------------------------------------------------------------------===//

// The variant pack's tensor ids.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kLowest, kOne, kDout, kDq, kDk, kDv,
  kDqAccumulator,
};

/// Dimensions and strides of the graphs' tensors, [batch, head, row, col]
/// over the project's [batch, seq, heads * headDim] layouts.
struct Layouts {
  Dims qDims, qStrides;         // q, out, dout, dq
  Dims kvDims, kvStrides;       // k, v, dk, dv
  Dims kvTDims, kvTStrides;     // k, v transposed to [b, hk, d, s]
  Dims scoreDims, scoreStrides; // [b, h, s_q, s_kv]
  Dims scoreTStrides;           // the same, transposed in place
  Dims rowDims, rowStrides;     // one value per query row: lse
  Dims packedQStrides;          // [b, h, s, d] packed: the dq accumulator

  explicit Layouts(const AttentionShape &x) {
    const int64_t b = x.batch, s = x.seq, h = x.heads, hk = x.kvHeads,
                  d = x.headDim;
    qDims = {b, h, s, d};
    qStrides = {s * h * d, d, h * d, 1};
    kvDims = {b, hk, s, d};
    kvStrides = {s * hk * d, d, hk * d, 1};
    kvTDims = {b, hk, d, s};
    kvTStrides = {s * hk * d, d, 1, hk * d};
    scoreDims = {b, h, s, s};
    scoreStrides = {h * s * s, s * s, s, 1};
    scoreTStrides = {h * s * s, s * s, 1, s};
    rowDims = {b, h, s, 1};
    rowStrides = {h * s, s, 1, 1};
    packedQStrides = {h * s * d, s * d, d, 1};
  }
};

/// The scaled scores q kᵀ * scale with the keys after each query masked
/// to the lowest float (cuDNN's causal-mask pattern).
Descriptor maskedScores(GraphBuilder &g, const Layouts &l, Descriptor q,
                        Descriptor kT, Descriptor scale, Descriptor lowest) {
  auto scores = [&](cudnnDataType_t type) {
    return g.intermediate(type, l.scoreDims, l.scoreStrides);
  };
  Descriptor s = g.matmul(q, kT, scores(CUDNN_DATA_FLOAT));
  s = g.binary(CUDNN_POINTWISE_MUL, s, scale, scores(CUDNN_DATA_FLOAT));
  Descriptor row = g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s,
                               nullptr, nullptr, scores(CUDNN_DATA_INT32), 2);
  Descriptor col = g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s,
                               nullptr, nullptr, scores(CUDNN_DATA_INT32), 3);
  Descriptor visible =
      g.pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col,
                  nullptr, scores(CUDNN_DATA_BOOLEAN));
  return g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, s,
                     lowest, visible, scores(CUDNN_DATA_FLOAT));
}

/// out = softmax(masked scores) v, lse = max + log(sum exp(scores - max)).
void buildForward(GraphBuilder &g, const AttentionShape &x) {
  Layouts l(x);
  Descriptor q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, l.qDims, l.qStrides);
  Descriptor kT = g.tensor(kK, CUDNN_DATA_BFLOAT16, l.kvTDims, l.kvTStrides);
  Descriptor v = g.tensor(kV, CUDNN_DATA_BFLOAT16, l.kvDims, l.kvStrides);
  Descriptor out = g.tensor(kO, CUDNN_DATA_BFLOAT16, l.qDims, l.qStrides);
  Descriptor lse = g.tensor(kStats, CUDNN_DATA_FLOAT, l.rowDims, l.rowStrides);
  Descriptor scale = g.scalar(kScale), lowest = g.scalar(kLowest);
  auto scores = [&](cudnnDataType_t type) {
    return g.intermediate(type, l.scoreDims, l.scoreStrides);
  };
  auto rows = [&] {
    return g.intermediate(CUDNN_DATA_FLOAT, l.rowDims, l.rowStrides);
  };
  Descriptor s = maskedScores(g, l, q, kT, scale, lowest);
  Descriptor max = g.reduction(CUDNN_REDUCE_TENSOR_MAX, s, rows());
  Descriptor centered =
      g.binary(CUDNN_POINTWISE_SUB, s, max, scores(CUDNN_DATA_FLOAT));
  Descriptor e =
      g.unary(CUDNN_POINTWISE_EXP, centered, scores(CUDNN_DATA_FLOAT));
  Descriptor sum = g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, rows());
  Descriptor logSum = g.unary(CUDNN_POINTWISE_LOG, sum, rows());
  g.binary(CUDNN_POINTWISE_ADD, max, logSum, lse);
  Descriptor p =
      g.binary(CUDNN_POINTWISE_DIV, e, sum, scores(CUDNN_DATA_BFLOAT16));
  g.matmul(p, v, out);
}

/// dv = pᵀ dout, ds = p o (dout vᵀ - rowsum(dout o out)) * scale,
/// dk = dsᵀ q, dq = ds k; dk and dv summed over each kv head's query heads.
void buildBackward(GraphBuilder &g, const AttentionShape &x) {
  Layouts l(x);
  const bool grouped = x.heads != x.kvHeads;
  Descriptor q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, l.qDims, l.qStrides);
  Descriptor kT = g.tensor(kK, CUDNN_DATA_BFLOAT16, l.kvTDims, l.kvTStrides);
  Descriptor vT = g.tensor(kV, CUDNN_DATA_BFLOAT16, l.kvTDims, l.kvTStrides);
  Descriptor out = g.tensor(kO, CUDNN_DATA_BFLOAT16, l.qDims, l.qStrides);
  Descriptor lse = g.tensor(kStats, CUDNN_DATA_FLOAT, l.rowDims, l.rowStrides);
  Descriptor dout = g.tensor(kDout, CUDNN_DATA_BFLOAT16, l.qDims, l.qStrides);
  Descriptor dq = g.tensor(kDq, CUDNN_DATA_BFLOAT16, l.qDims, l.qStrides);
  Descriptor dk = g.tensor(kDk, CUDNN_DATA_BFLOAT16, l.kvDims, l.kvStrides);
  Descriptor dv = g.tensor(kDv, CUDNN_DATA_BFLOAT16, l.kvDims, l.kvStrides);
  Descriptor dqAccumulator =
      g.tensor(kDqAccumulator, CUDNN_DATA_FLOAT, l.qDims, l.packedQStrides,
               /*f16x16=*/true);
  Descriptor scale = g.scalar(kScale), lowest = g.scalar(kLowest),
             one = g.scalar(kOne);
  auto scores = [&](cudnnDataType_t type) {
    return g.intermediate(type, l.scoreDims, l.scoreStrides);
  };
  auto rows = [&] {
    return g.intermediate(CUDNN_DATA_FLOAT, l.rowDims, l.rowStrides);
  };
  auto transposed = [&] {
    return g.intermediate(CUDNN_DATA_BFLOAT16, l.scoreDims, l.scoreTStrides);
  };
  // The per-query-head product pᵀ dout (or dsᵀ q), summed over the group.
  auto keyGradient = [&](Descriptor aT, Descriptor b, Descriptor grad) {
    if (!grouped)
      return g.matmul(aT, b, grad);
    Descriptor perHead = g.matmul(
        aT, b,
        g.intermediate(CUDNN_DATA_BFLOAT16, l.qDims, l.packedQStrides));
    return g.reduction(CUDNN_REDUCE_TENSOR_ADD, perHead, grad);
  };

  Descriptor doutOut = g.binary(
      CUDNN_POINTWISE_MUL, dout, out,
      g.intermediate(CUDNN_DATA_FLOAT, l.qDims,
                     {l.packedQStrides[0], l.packedQStrides[1], l.qStrides[2],
                      1}));
  Descriptor rowSum =
      g.binary(CUDNN_POINTWISE_MUL,
               g.reduction(CUDNN_REDUCE_TENSOR_ADD, doutOut, rows()), one,
               rows());

  Descriptor s = maskedScores(g, l, q, kT, scale, lowest);
  s = g.binary(CUDNN_POINTWISE_SUB, s, lse, scores(CUDNN_DATA_FLOAT));
  Descriptor p = g.unary(CUDNN_POINTWISE_EXP, s, scores(CUDNN_DATA_FLOAT));
  keyGradient(g.reshape(p, transposed()), dout, dv);

  Descriptor dp = g.matmul(dout, vT, scores(CUDNN_DATA_FLOAT));
  dp = g.binary(CUDNN_POINTWISE_MUL, dp, one, scores(CUDNN_DATA_FLOAT));
  dp = g.binary(CUDNN_POINTWISE_SUB, dp, rowSum, scores(CUDNN_DATA_FLOAT));
  Descriptor ds = g.binary(CUDNN_POINTWISE_MUL, dp, p, scores(CUDNN_DATA_FLOAT));
  ds = g.binary(CUDNN_POINTWISE_MUL, ds, scale, scores(CUDNN_DATA_FLOAT));
  keyGradient(g.reshape(ds, transposed()), q, dk);

  Descriptor k = g.reshape(
      kT, g.intermediate(CUDNN_DATA_BFLOAT16, l.kvDims, l.kvStrides));
  g.matmul(ds, k, dqAccumulator);
  g.unary(CUDNN_POINTWISE_IDENTITY, dqAccumulator, dq);
}

//===----------------------------------------------------------------------===//
// Plans, cached per device and shape
//===----------------------------------------------------------------------===//

struct Plan {
  std::unique_ptr<GraphBuilder> graph; ///< owns the plan's descriptors
  Descriptor plan = nullptr;
  void *workspace = nullptr;
  int64_t workspaceBytes = 0;
  std::string unsupported; ///< why cuDNN cannot run the shape, if it cannot
};

using PlanKey = std::tuple<int, bool, int64_t, int64_t, int64_t, int64_t,
                           int64_t, uint32_t>;

struct Cache {
  std::mutex mutex;
  std::map<int, cudnnHandle_t> handles;
  std::map<PlanKey, Plan> plans;
};

Cache &cache() {
  static Cache *instance = new Cache; // outlives every static destructor
  return *instance;
}

/// Lets this thread allocate and load modules while its stream is being
/// captured: cuDNN does both while it builds a plan.
class RelaxedCapture {
public:
  RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }

private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

std::string shapeText(const AttentionShape &x) {
  return fmt::format("batch {}, seq {}, heads {}:{}, head dim {}", x.batch,
                     x.seq, x.heads, x.kvHeads, x.headDim);
}

/// The plan for `shape` on the current device (built on first use; its
/// `unsupported` says why not), with the device's handle.
Expected<Plan *> findPlan(const AttentionShape &x, bool backward,
                          cudnnHandle_t *handle) {
  const CudnnLibrary &api = cudnnLibrary();
  int device = 0;
  QLORA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  uint32_t scaleBits = 0;
  std::memcpy(&scaleBits, &x.scale, sizeof(scaleBits));
  PlanKey key{device, backward, x.batch, x.seq, x.heads, x.kvHeads,
              x.headDim, scaleBits};
  Cache &c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  auto found = c.plans.find(key);
  if (found != c.plans.end()) {
    *handle = c.handles[device];
    return &found->second;
  }
  RelaxedCapture relaxed;
  auto knownHandle = c.handles.find(device);
  if (knownHandle == c.handles.end()) {
    cudnnHandle_t created = nullptr;
    cudnnStatus_t status = api.create(&created);
    if (status != CUDNN_STATUS_SUCCESS)
      return makeError("cuDNN attention: {}",
                       api.describe("cudnnCreate", status));
    knownHandle = c.handles.emplace(device, created).first;
  }
  *handle = knownHandle->second;
  Plan plan;
  plan.graph = std::make_unique<GraphBuilder>(api);
  if (x.headDim % 8 != 0 || x.headDim > 128)
    plan.unsupported = "head dim must be a multiple of 8 up to 128";
  else {
    if (backward)
      buildBackward(*plan.graph, x);
    else
      buildForward(*plan.graph, x);
    plan.plan = plan.graph->plan(*handle, &plan.workspaceBytes);
    if (!plan.plan)
      plan.unsupported = plan.graph->error();
  }
  if (plan.plan && plan.workspaceBytes > 0)
    QLORA_CUDA_RETURN_IF_ERROR(
        cudaMalloc(&plan.workspace, size_t(plan.workspaceBytes)));
  return &c.plans.emplace(key, std::move(plan)).first->second;
}

/// The plan to run `shape` with, or nullptr where QLORA_ATTENTION lets the
/// built-in kernels serve it instead (`*why` says why, when given).
Expected<Plan *> planFor(const AttentionShape &x, bool backward,
                         cudnnHandle_t *handle, std::string *why = nullptr) {
  auto decline = [&](std::string reason) -> Expected<Plan *> {
    if (why)
      *why = std::move(reason);
    return nullptr;
  };
  Expected<AttentionChoice> choice = attentionChoice();
  if (!choice)
    return choice.error();
  if (*choice == AttentionChoice::Builtin)
    return decline("QLORA_ATTENTION=builtin");
  const CudnnLibrary &api = cudnnLibrary();
  if (!api.loaded) {
    if (*choice == AttentionChoice::Cudnn)
      return makeError("QLORA_ATTENTION=cudnn, but {}", api.reason);
    return decline(api.reason);
  }
  Expected<Plan *> plan = findPlan(x, backward, handle);
  if (!plan)
    return plan.error();
  if (!(*plan)->unsupported.empty()) {
    std::string reason = fmt::format(
        "cuDNN {} cannot run the {} attention of {}: {}", api.version,
        backward ? "backward" : "forward", shapeText(x),
        (*plan)->unsupported);
    if (*choice == AttentionChoice::Cudnn)
      return makeError("QLORA_ATTENTION=cudnn, but {}", reason);
    return decline(std::move(reason));
  }
  return *plan;
}

Status execute(const Plan &plan, cudnnHandle_t handle, cudaStream_t stream,
               const std::vector<int64_t> &uids,
               const std::vector<void *> &pointers) {
  const CudnnLibrary &api = cudnnLibrary();
  auto fail = [&](const char *call, cudnnStatus_t status) -> Status {
    return makeError("cuDNN attention: {}", api.describe(call, status));
  };
  cudnnStatus_t status = api.setStream(handle, stream);
  if (status != CUDNN_STATUS_SUCCESS)
    return fail("cudnnSetStream", status);
  Descriptor pack = nullptr;
  status = api.createDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
  if (status != CUDNN_STATUS_SUCCESS)
    return fail("creating the variant pack", status);
  void *workspace = plan.workspace;
  status = api.setAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                            CUDNN_TYPE_INT64, int64_t(uids.size()),
                            uids.data());
  if (status == CUDNN_STATUS_SUCCESS)
    status = api.setAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                              CUDNN_TYPE_VOID_PTR, int64_t(pointers.size()),
                              pointers.data());
  if (status == CUDNN_STATUS_SUCCESS)
    status = api.setAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                              CUDNN_TYPE_VOID_PTR, 1, &workspace);
  if (status == CUDNN_STATUS_SUCCESS)
    status = api.finalize(pack);
  if (status == CUDNN_STATUS_SUCCESS)
    status = api.execute(handle, plan.plan, pack);
  api.destroyDescriptor(pack);
  if (status != CUDNN_STATUS_SUCCESS)
    return fail("running the plan", status);
  return Status::ok();
}

Status checkShape(const AttentionShape &x) {
  if (x.batch <= 0 || x.seq <= 0 || x.heads <= 0 || x.kvHeads <= 0 ||
      x.headDim <= 0 || x.heads % x.kvHeads != 0)
    return makeError("cuDNN attention: bad shape ({})", shapeText(x));
  return Status::ok();
}

// By-value scalars: cuDNN reads them when a call is enqueued (or captured).
const float kLowestFloat = -FLT_MAX;
const float kOneFloat = 1.0f;

/// Runs `shape`'s plan in one direction with the variant pack `uids` ->
/// `pointers`, after `prepare` (enqueued first); `*ran` false where the
/// built-in kernels serve the call.
Status run(const AttentionShape &shape, bool backward, cudaStream_t stream,
           const std::vector<int64_t> &uids,
           const std::vector<void *> &pointers, bool *ran,
           const std::function<Status()> &prepare = {}) {
  *ran = false;
  QLORA_RETURN_IF_ERROR(checkShape(shape));
  cudnnHandle_t handle = nullptr;
  Expected<Plan *> plan = planFor(shape, backward, &handle);
  if (!plan)
    return plan.error();
  if (!*plan)
    return Status::ok();
  if (prepare)
    QLORA_RETURN_IF_ERROR(prepare());
  QLORA_RETURN_IF_ERROR(execute(**plan, handle, stream, uids, pointers));
  *ran = true;
  return Status::ok();
}

} // namespace

Status cudnnAttentionForward(const uint16_t *q, const uint16_t *k,
                             const uint16_t *v, const AttentionShape &shape,
                             uint16_t *out, float *lse, cudaStream_t stream,
                             bool *ran) {
  float scale = shape.scale;
  return run(shape, /*backward=*/false, stream,
             {kQ, kK, kV, kO, kStats, kScale, kLowest},
             {const_cast<uint16_t *>(q), const_cast<uint16_t *>(k),
              const_cast<uint16_t *>(v), out, lse, &scale,
              const_cast<float *>(&kLowestFloat)},
             ran);
}

Status cudnnAttentionBackward(const uint16_t *q, const uint16_t *k,
                              const uint16_t *v, const uint16_t *out,
                              const float *lse, const uint16_t *dout,
                              const AttentionShape &shape,
                              float *dqAccumulator, uint16_t *dq, uint16_t *dk,
                              uint16_t *dv, cudaStream_t stream, bool *ran) {
  float scale = shape.scale;
  // The plan sums dq into the accumulator.
  auto zeroAccumulator = [&]() -> Status {
    QLORA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
        dqAccumulator, 0,
        size_t(shape.batch * shape.seq * shape.heads * shape.headDim) *
            sizeof(float),
        stream));
    return Status::ok();
  };
  return run(shape, /*backward=*/true, stream,
             {kQ, kK, kV, kO, kStats, kDout, kDq, kDk, kDv, kDqAccumulator,
              kScale, kLowest, kOne},
             {const_cast<uint16_t *>(q), const_cast<uint16_t *>(k),
              const_cast<uint16_t *>(v), const_cast<uint16_t *>(out),
              const_cast<float *>(lse), const_cast<uint16_t *>(dout), dq, dk,
              dv, dqAccumulator, &scale, const_cast<float *>(&kLowestFloat),
              const_cast<float *>(&kOneFloat)},
             ran, zeroAccumulator);
}

std::string attentionImplementation(const AttentionShape &shape) {
  Status valid = checkShape(shape);
  if (!valid)
    return "built-in kernels (" + valid.message() + ")";
  cudnnHandle_t handle = nullptr;
  std::string why;
  Expected<Plan *> forward = planFor(shape, false, &handle, &why);
  if (!forward || !*forward)
    return "built-in kernels (" + (forward ? why : forward.message()) + ")";
  Expected<Plan *> backward = planFor(shape, true, &handle, &why);
  if (!backward || !*backward)
    return "built-in kernels (" + (backward ? why : backward.message()) + ")";
  const size_t version = cudnnLibrary().version;
  return fmt::format("cuDNN {}.{}.{} fused attention (workspace {} forward, "
                     "{} backward)",
                     version / 10000, version / 100 % 100, version % 100,
                     formatByteSize((*forward)->workspaceBytes),
                     formatByteSize((*backward)->workspaceBytes));
}

} // namespace qlora::cuda
