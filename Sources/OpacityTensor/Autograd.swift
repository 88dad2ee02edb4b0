import Foundation

/// One recorded operation in the autograd graph (a tape entry).
///
/// A node knows its parents (the nodes of the inputs that need gradients) and a closure
/// that maps the gradient of the output to gradients of each input. ``Tensor/backward(_:)``
/// walks the nodes in reverse topological order and frees each closure once used.
public final class GradNode: @unchecked Sendable {
    /// The operation that made this node, for messages.
    public let op: String
    /// The shape of the output this node stands for.
    public let shape: [Int]
    var parents: [GradNode?]
    var backwardFn: ((Tensor) -> [Tensor?])?
    /// The gradient arriving at this node (kept for leaves after backward).
    public internal(set) var grad: Tensor?
    /// Set for leaves that belong to a parameter.
    weak var parameter: Parameter?
    let isLeaf: Bool
    /// The checkpoint segment whose recomputation made this node (`nil` elsewhere).
    weak var segment: CheckpointSegment?

    init(op: String, shape: [Int], parents: [GradNode?], backward: @escaping (Tensor) -> [Tensor?]) {
        self.op = op
        self.shape = shape
        self.parents = parents
        self.backwardFn = backward
        self.isLeaf = false
    }

    init(leafShape: [Int], parameter: Parameter? = nil) {
        self.op = "leaf"
        self.shape = leafShape
        self.parents = []
        self.backwardFn = nil
        self.parameter = parameter
        self.isLeaf = true
    }

    func accumulate(_ g: Tensor) {
        shapeCheck(g.shape == shape, "backward(\(op))", "gradient of shape \(describe(g.shape)) for output \(describe(shape))")
        if grad == nil {
            grad = g.detached()
        } else {
            grad!.addInPlace(g)
        }
    }
}

/// Controls whether operations record the autograd graph.
///
/// Recording is on by default. Inside ``Autograd/inference(_:)`` nothing is recorded, so
/// every intermediate activation is freed as soon as the next layer has consumed it.
public enum Autograd {
    @TaskLocal static var recording = true

    /// Whether operations currently record gradients.
    public static var isRecording: Bool { recording }

    /// Set while a backward pass runs (which records nothing either).
    @TaskLocal static var inBackward = false

    /// Whether this is an inference pass: no graph recorded and not inside a backward pass.
    /// Kernels cache values derived from the weights (``TensorStorage/derived(_:count:keep:compute:)``)
    /// only then: in training the weights change every step.
    /// The forward pass of a checkpoint segment (``checkpoint(_:_:)``) records nothing either
    /// but is training: it caches nothing.
    package static var isInference: Bool { !recording && !inBackward && segment == nil }

    /// Runs `body` with recording switched off (inference: no graph, activations freed early).
    public static func inference<R>(_ body: () throws -> R) rethrows -> R {
        try $recording.withValue(false) { try body() }
    }

    /// Runs `body` with recording switched on.
    public static func recordingGradients<R>(_ body: () throws -> R) rethrows -> R {
        try $recording.withValue(true) { try body() }
    }

    /// Whether ops keep a recipe instead of a map that is cheap to recompute
    /// (``SavedActivation``): on by default; the values and gradients are the same bits
    /// either way (`OPACITY_SELECTIVE_RECOMPUTATION=0` starts with it off, for comparisons;
    /// `1` keeps only the norms' recipes, ``convolutionRecomputation``).
    /// Set it between passes, not while one runs.
    nonisolated(unsafe) package static var selectiveRecomputation: Bool = TuningVariable.selectiveRecomputation.value >= 1

    /// Whether a 1x1 convolution that at least doubles its channels (`Cout >= 2 Cin`: a
    /// bottleneck's expansion, a downsampling shortcut, Xception's entry-flow pointwise
    /// convolutions) leaves a recipe on its output too, so that the norm after it keeps the
    /// recipe and backward runs the convolution again (``SavedActivation``). Its input is kept
    /// anyway, for the weight gradient, so the output's whole map is saved, for one more GEMM in
    /// backward of `2 Cin` operations per saved value: at least doubling keeps that at most `Cout`
    /// per value, the cheapest maps to recompute. A depthwise convolution leaves one too (`2 k^2`
    /// operations per value), which a separable convolution's pointwise half keeps instead of
    /// the depthwise output (Xception, NASNet). On by default (`OPACITY_SELECTIVE_RECOMPUTATION=2`;
    /// `1` turns it off); it needs ``selectiveRecomputation``. The values and gradients are the
    /// same bits either way. Measured on a RetinaNet at 512 px, batch 2 (Benchmarks.md, "Selective
    /// recomputation of 1x1 convolutions"). An FPN's top-down merge leaves a recipe under the same
    /// switch (``Tensor/conv2d(_:bias:stride:padding:dilation:groups:addingUpsampled2x:)``: the
    /// lateral convolution again, one GEMM). Set it between passes, not while one runs.
    nonisolated(unsafe) package static var convolutionRecomputation: Bool = TuningVariable.selectiveRecomputation.value >= 2

    /// Whether a ReLU that records a node keeps its output for backward without its zeros
    /// (``SparseActivation``), a convolution reading that output keeps the same packed form
    /// instead of the map (``SavedActivation``), and a frozen batch norm with its fused ReLU keeps
    /// its input only where its output is not zero. On by default; `OPACITY_SPARSE_ACTIVATIONS=0`
    /// starts with it off. Lossless: the values and gradients are the same bits either way.
    /// Measured on RetinaNets at 512 px, batch 2, frozen batch norm: the training step's peak
    /// 10-21% lower; the step time (a pass over each packed map in forward and one or two in
    /// backward) 0.98-1.05x in four alternated pairs on an idle machine (Benchmarks.md, "Maps
    /// kept without their zeros" and "Packing by default"). Set it between passes, not while one runs.
    nonisolated(unsafe) package static var sparseActivations: Bool = TuningVariable.sparseActivations.value >= 1

    /// The ledger of ``measuringSavedTensors(_:)`` while one runs.
    nonisolated(unsafe) static var savedTensorLedger: SavedTensorLedger?

    /// Runs `body` (a forward and backward pass) and measures what the graph kept for
    /// backward: for each operation kind, the bytes of tensor storage that were freed when
    /// ``Tensor/backward(_:)`` dropped that kind's nodes (their saved inputs and outputs),
    /// and the number of nodes. A tensor saved by several nodes (a ReLU's output that the
    /// next convolution also saves) counts for the node that released it last.
    ///
    /// For diagnostics (`opacity-bench detector` with `OPACITY_MEMORY_REPORT=1`); not for
    /// concurrent use: one measurement at a time, with backward on the calling thread.
    public static func measuringSavedTensors<R>(_ body: () throws -> R) rethrows -> (result: R, saved: [String: (bytes: Int, nodes: Int)]) {
        let ledger = SavedTensorLedger()
        savedTensorLedger = ledger
        defer {
            savedTensorLedger = nil
            backwardPeak = ledger.peak
        }
        let r = try body()
        return (r, ledger.byOp)
    }

    /// Where a backward pass's memory peaked: the node whose backward (its gradient
    /// computation and the accumulation of its inputs' gradients) raised the most tensor
    /// storage alive (``TensorMemory/livePeakBytes``) to its highest.
    public struct BackwardPeak: Sendable {
        /// The node's operation, e.g. `conv2d`.
        public let op: String
        /// The shape of the node's output (the gradient it received).
        public let shape: [Int]
        /// Bytes of tensor storage alive at that peak (since the last ``TensorMemory/resetLivePeak()``).
        public let bytes: Int
        /// The node's place in the backward walk (0 = first) and the walk's length.
        public let position: Int, nodes: Int
        /// Bytes the storage pool held as cached free blocks, and bytes of idle kernel scratch
        /// buffers, right after that node's backward: resident memory that is not tensor storage
        /// alive (``TensorMemory/pooledBytes``, ``TensorMemory/idleScratchBytes``).
        public let pooledBytes: Int, idleScratchBytes: Int
    }

    /// The peak of the last backward pass run inside ``measuringSavedTensors(_:)``, or nil
    /// when no node raised the live peak (diagnostics for `OPACITY_MEMORY_REPORT=1`).
    nonisolated(unsafe) public static var backwardPeak: BackwardPeak?

    /// Whether an op over these inputs must record a node.
    @inline(__always)
    static func needsGrad(_ inputs: Tensor...) -> Bool {
        guard recording else { return false }
        for t in inputs where t.node != nil { return true }
        return false
    }

    @inline(__always)
    static func needsGrad(_ inputs: [Tensor]) -> Bool {
        guard recording else { return false }
        for t in inputs where t.node != nil { return true }
        return false
    }

    /// Attaches a node to `output` when any input is tracked and recording is on.
    ///
    /// `backward` receives the output gradient and returns one gradient (or `nil`) per input.
    package static func record(_ op: String, _ output: Tensor, inputs: [Tensor],
                       backward: @escaping (Tensor) -> [Tensor?]) -> Tensor {
        guard needsGrad(inputs) else { return output }
        let node = GradNode(op: op, shape: output.shape, parents: inputs.map { $0.node }, backward: backward)
        if let s = segment, s.isRecomputing { node.segment = s }
        return output.withNode(node)
    }
}

/// Bytes released per operation kind by backward (see ``Autograd/measuringSavedTensors(_:)``).
final class SavedTensorLedger {
    var byOp: [String: (bytes: Int, nodes: Int)] = [:]
    /// The node during whose backward the most tensor storage was alive
    /// (``Autograd/backwardPeak``).
    var peak: Autograd.BackwardPeak?

    func add(_ op: String, bytes: Int) {
        let old = byOp[op] ?? (0, 0)
        byOp[op] = (old.bytes + bytes, old.nodes + 1)
    }
}

extension Tensor {
    /// Back-propagates from this tensor.
    ///
    /// - Parameter seed: The gradient of some scalar with respect to this tensor; omit it
    ///   for a one-element tensor (the seed is then 1).
    ///
    /// Gradients accumulate into parameters (``Parameter/grad``) and into leaves made with
    /// ``requiringGrad()``. The graph is consumed: its closures and intermediate gradients
    /// are freed as the walk passes them.
    public func backward(_ seed: Tensor? = nil) { backward(seed, parameterReady: nil) }

    /// Back-propagates from this tensor and calls `parameterReady` for each parameter as
    /// soon as its gradient for this pass is complete (all of its uses are walked), in the
    /// walk's order: data-parallel training starts reducing a bucket of gradients while
    /// earlier layers are still being differentiated.
    public func backward(_ seed: Tensor?, parameterReady: ((Parameter) -> Void)?) {
        guard let root = node else {
            fatalError("backward: this tensor does not require gradients (no parameter or requiringGrad() input reached it)")
        }
        let seedTensor: Tensor
        if let s = seed {
            shapeCheck(s.shape == shape, "backward", "seed shape \(describe(s.shape)) differs from output \(describe(shape))")
            seedTensor = s.detached()
        } else {
            shapeCheck(count == 1, "backward", "output of shape \(describe(shape)) is not a scalar; pass a seed gradient")
            seedTensor = Tensor(shape: shape, repeating: 1)
        }
        Autograd.runBackward(roots: [(root, seedTensor)], parameterReady: parameterReady)
    }
}

extension Autograd {
    /// Back-propagates from several tensors in one walk, seeding each with the gradient that
    /// backward passes accumulated in the leaf at the same index (made by
    /// ``Tensor/requiringGrad()`` from it, standing for it in a part of the graph that was
    /// differentiated on its own). Each leaf's gradient is taken, not copied: the leaf has none
    /// afterwards, and the seed's memory is freed as soon as the walk has passed its tensor.
    /// Pairs where the tensor does not require gradients or the leaf received none are skipped.
    /// As ``Tensor/backward(_:parameterReady:)`` otherwise.
    /// - Precondition: as many leaves as tensors; each leaf of its tensor's shape.
    public static func backward(_ tensors: [Tensor], takingGradientsOf leaves: [Tensor], parameterReady: ((Parameter) -> Void)? = nil) {
        precondition(tensors.count == leaves.count, "Autograd.backward: \(tensors.count) tensors but \(leaves.count) leaves")
        var roots: [GradNode] = []
        for (t, leaf) in zip(tensors, leaves) {
            guard let node = t.node, let leafNode = leaf.node, let g = leafNode.grad else { continue }
            shapeCheck(g.shape == t.shape, "Autograd.backward", "leaf gradient of shape \(describe(g.shape)) for a tensor of shape \(describe(t.shape))")
            leafNode.grad = nil
            node.accumulate(g)
            roots.append(node)
        }
        if !roots.isEmpty { runBackward(roots: roots.map { ($0, nil) }, parameterReady: parameterReady) }
    }

    /// Walks the graph above `roots` in reverse topological order, seeding each root's node
    /// with its gradient (the roots may share nodes and ancestors).
    ///
    /// With `segment` set (a recomputed checkpoint segment), every node reached must have been
    /// made by that segment's recomputation: a node from elsewhere means the segment's body
    /// read a tracked tensor it was not given as an input, whose gradient would be lost.
    static func runBackward(roots: [(GradNode, Tensor)], parameterReady: ((Parameter) -> Void)?,
                            segment: CheckpointSegment? = nil) {
        runBackward(roots: roots.map { ($0.0, Optional($0.1)) }, parameterReady: parameterReady, segment: segment)
    }

    /// ``runBackward(roots:parameterReady:segment:)`` where a root without a seed already holds
    /// its gradient.
    static func runBackward(roots: [(GradNode, Tensor?)], parameterReady: ((Parameter) -> Void)?,
                            segment: CheckpointSegment? = nil) {
        // Iterative depth-first topological order (deep networks would overflow recursion).
        var order: [GradNode] = []
        var visited = Set<ObjectIdentifier>()
        for (root, _) in roots where !visited.contains(ObjectIdentifier(root)) {
            var stack: [(GradNode, Int)] = [(root, 0)]
            visited.insert(ObjectIdentifier(root))
            while !stack.isEmpty {
                let (n, i) = stack[stack.count - 1]
                if let segment, n.segment !== segment {
                    fatalError("Autograd.checkpoint: the segment's body used a tensor that requires gradients (reached through '\(n.op)', shape \(describe(n.shape))) without receiving it as an input; pass every such tensor in `inputs` (parameters are found by themselves)")
                }
                if i < n.parents.count {
                    stack[stack.count - 1].1 = i + 1
                    if let p = n.parents[i], !visited.contains(ObjectIdentifier(p)) {
                        visited.insert(ObjectIdentifier(p))
                        stack.append((p, 0))
                    }
                } else {
                    order.append(n)
                    stack.removeLast()
                }
            }
        }
        let ledger = Autograd.savedTensorLedger
        Autograd.$recording.withValue(false) {
            Autograd.$inBackward.withValue(true) { () -> Void in
            for case (let root, let seed?) in roots { root.accumulate(seed) }
            for (position, n) in order.reversed().enumerated() {
                if let g = n.grad {
                    if let fn = n.backwardFn {
                        let peakBefore = ledger == nil ? 0 : StorageAccounting.current.peak
                        let grads = fn(g)
                        for (p, gi) in zip(n.parents, grads) {
                            if let p, let gi { p.accumulate(gi) }
                        }
                        if let ledger {
                            let peak = StorageAccounting.current.peak
                            if peak > peakBefore, peak > (ledger.peak?.bytes ?? 0) {
                                ledger.peak = BackwardPeak(
                                    op: n.op, shape: n.shape, bytes: peak, position: position, nodes: order.count,
                                    pooledBytes: StoragePool.cachedBytes, idleScratchBytes: ScratchBuffers.idleBytes)
                            }
                        }
                        n.grad = nil
                    } else if let param = n.parameter {
                        param.accumulateGrad(g)
                        n.grad = nil
                        parameterReady?(param)
                    }
                }
                // Free the closure (and the activations it holds) even when no gradient
                // arrived, e.g. a branch whose gradients were all `nil`.
                if !n.isLeaf {
                    let before = ledger == nil ? 0 : TensorMemory.liveBytes
                    n.backwardFn = nil
                    n.parents = []
                    ledger?.add(n.op, bytes: before - TensorMemory.liveBytes)
                }
            }
            }
        }
    }
}

/// A tensor an op keeps for its backward pass: the tensor itself, or, when its storage
/// carries a ``TensorStorage/regeneration`` recipe, only the recipe, so that the map itself
/// can be freed once the forward pass has consumed it (selective recomputation: a batch
/// norm's output, with its fused ReLU, is recomputed from the input the norm saved, an
/// elementwise pass, instead of being kept beside it).
///
/// Used for a convolution's input (``Tensor/conv2d(_:bias:stride:padding:dilation:groups:)``):
/// in a ResNet bottleneck, `bn1`'s and `bn2`'s outputs. A RetinaNet with a ResNet-50 encoder at
/// 512 px, batch 2, frozen batch norm, keeps 146 MiB less on its tape (1340 -> 1194 MiB,
/// `OPACITY_MEMORY_REPORT=1`, Benchmarks.md "Selective recomputation"). And for a batch norm's
/// input, which a channel-doubling 1x1 convolution's recipe replaces
/// (``Autograd/convolutionRecomputation``: 1194 -> 931 MiB for the same detector, Benchmarks.md
/// "Selective recomputation of 1x1 convolutions").
package struct SavedActivation: @unchecked Sendable {
    /// The tensor's shape.
    let shape: [Int]
    /// The tensor, when it is kept.
    private let kept: Tensor?
    /// The recipe, when the tensor is not kept.
    private let recipe: (@Sendable (Tensor) -> Void)?
    /// The tensor without its zeros, when it is kept that way (a ReLU's output).
    private let sparse: SparseActivation?

    /// Whether the tensor is recomputed rather than kept.
    var isRecipe: Bool { recipe != nil }

    /// The packed form, when the tensor is kept without its zeros.
    var packed: SparseActivation? { sparse }

    /// Keeps `t`'s packed form when its storage has one (a ReLU's output, with
    /// ``Autograd/sparseActivations`` on), else its recipe when it has one (and
    /// ``Autograd/selectiveRecomputation`` is on), else `t` (detached from the graph).
    init(_ t: Tensor) {
        shape = t.shape
        if Autograd.sparseActivations, let p = t.storage.sparse, p.count == t.count {
            kept = nil
            recipe = nil
            sparse = p
        } else if Autograd.selectiveRecomputation, let r = t.storage.regeneration {
            kept = nil
            recipe = r
            sparse = nil
        } else {
            kept = t.detached()
            recipe = nil
            sparse = nil
        }
    }

    /// Keeps `packed`, a tensor of `shape` without the values its backward does not read
    /// (a fused ReLU's input, ``SparseActivation/pack(_:count:keepingWhere:planeFill:)``).
    init(packed: SparseActivation, shape: [Int]) {
        self.shape = shape
        kept = nil
        recipe = nil
        sparse = packed
    }

    /// Keeps `t` as `sparse` (its packed form, ``SparseActivation/pack(_:count:)``), which
    /// `t`'s storage then carries for the next op that saves it, or `t` itself when `sparse` is
    /// nil: a ReLU's output for the ReLU's own backward.
    init(_ t: Tensor, sparse: SparseActivation?) {
        shape = t.shape
        recipe = nil
        if let sparse {
            t.storage.sparse = sparse
            kept = nil
            self.sparse = sparse
        } else {
            kept = t.detached()
            self.sparse = nil
        }
    }

    /// The tensor: the kept one, or a fresh one the recipe or the packed form fills (the same
    /// values, bit for bit).
    func value() -> Tensor {
        if let kept { return kept }
        if let sparse { return sparse.tensor(shape: shape) }
        let t = Tensor(uninitializedShape: shape)
        recipe!(t)
        return t
    }
}
