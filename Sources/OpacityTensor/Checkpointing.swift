import Foundation

// Activation checkpointing (recomputation): a segment of the forward pass keeps only its
// inputs for backward and runs again, recording, when its gradients are needed.

/// The state of one checkpoint segment: the parameters its body read, the values stateful
/// layers asked to replay, the gradients arriving at its outputs. Used by one task at a time
/// (the forward pass, then the backward walk).
final class CheckpointSegment: @unchecked Sendable {
    /// Set while the body runs again inside backward (recording).
    private(set) var isRecomputing = false
    /// The parameters the first run read, in first-use order, with the leaf that stands for
    /// each in the recomputation (made at its first use there).
    private var parameters: [(parameter: Parameter, proxy: GradNode?)] = []
    private var parameterIndex: [ObjectIdentifier: Int] = [:]
    /// Values stateful layers recorded in the first run (``Autograd/checkpointReplayed(_:)``).
    private var replayLog: [Any] = []
    private var replayNext = 0
    /// The gradient arriving at each output (set by the outputs' nodes).
    var outputGradients: [Tensor?] = []

    /// The tensor a layer reads for `p` inside the segment: its untracked value in the first
    /// run (the parameter noted), a tracked value over a leaf of this segment's own when the
    /// body runs again.
    func tensor(for p: Parameter) -> Tensor {
        let key = ObjectIdentifier(p)
        guard isRecomputing else {
            if parameterIndex[key] == nil {
                parameterIndex[key] = parameters.count
                parameters.append((p, nil))
            }
            return p.value
        }
        guard let i = parameterIndex[key] else {
            fatalError("Autograd.checkpoint: the body read a parameter of shape \(describe(p.shape)) when it ran again that it did not read in its first run; the body must do the same work both times")
        }
        if let proxy = parameters[i].proxy { return p.value.withNode(proxy) }
        let proxy = GradNode(leafShape: p.value.shape)
        proxy.segment = self
        parameters[i].proxy = proxy
        return p.value.withNode(proxy)
    }

    /// The parameters read in the first run.
    var parameterCount: Int { parameters.count }
    /// The leaves of the parameters read (the segment node's parents after the inputs').
    var parameterLeaves: [GradNode?] { parameters.map { $0.parameter.tensor.node } }

    func replayed<T>(_ value: T) -> T {
        guard isRecomputing else {
            replayLog.append(value)
            return value
        }
        guard replayNext < replayLog.count, let v = replayLog[replayNext] as? T else {
            fatalError("Autograd.checkpoint: a stateful layer asked for replay value \(replayNext + 1) of type \(T.self) when the body ran again, but the first run recorded \(replayLog.count) values\(replayNext < replayLog.count ? " and another type there" : ""); the body must do the same work both times")
        }
        replayNext += 1
        return v
    }

    /// Runs `body` again with recording on, back-propagates the outputs' gradients through
    /// it, and returns the gradients of `inputs` followed by those of the parameters read.
    /// `tracked[i]`: whether input `i` had a node (gets a gradient).
    func recompute(inputs: [Tensor], tracked: [Bool], body: ([Tensor]) -> [Tensor]) -> [Tensor?] {
        isRecomputing = true
        replayNext = 0
        defer {
            isRecomputing = false
            replayLog = []
            for i in parameters.indices { parameters[i].proxy = nil }
        }
        // Each tracked input becomes a leaf of this segment; the others stay constants.
        let leaves: [Tensor] = zip(inputs, tracked).map { x, isTracked in
            guard isTracked else { return x }
            var t = x.detached()
            let leaf = GradNode(leafShape: x.shape)
            leaf.segment = self
            t.node = leaf
            return t
        }
        let outputs = Autograd.$recording.withValue(true) {
            Autograd.$segment.withValue(self) { body(leaves) }
        }
        guard outputs.count == outputGradients.count else {
            fatalError("Autograd.checkpoint: the body returned \(outputs.count) tensors when it ran again, \(outputGradients.count) the first time")
        }
        var roots: [(GradNode, Tensor)] = []
        for (o, g) in zip(outputs, outputGradients) {
            guard let g else { continue }
            shapeCheck(o.shape == g.shape, "Autograd.checkpoint", "the body returned shape \(describe(o.shape)) when it ran again, \(describe(g.shape)) the first time")
            if let n = o.node { roots.append((n, g)) }
        }
        outputGradients = []
        if !roots.isEmpty { Autograd.runBackward(roots: roots, parameterReady: nil, segment: self) }
        return leaves.map { $0.node?.grad } + parameters.map { $0.proxy?.grad }
    }
}

extension Autograd {
    /// The checkpoint segment whose body is running (its first run or its recomputation).
    @TaskLocal static var segment: CheckpointSegment?

    /// Whether a checkpoint segment's body is running again inside backward
    /// (``checkpoint(_:_:)``): stateful layers then replay what they did in the first run
    /// instead of doing it again (see ``checkpointReplayed(_:)``).
    public static var isRecomputing: Bool { segment?.isRecomputing ?? false }

    /// For stateful layers inside a checkpoint segment: returns `value` and notes it in the
    /// segment's first run, and returns the value noted at the same point when the segment
    /// runs again, so that the recomputation sees the same state (e.g. a dropout layer's
    /// random stream, which must draw the same mask twice and advance once). Outside a
    /// segment, returns `value`.
    ///
    /// A layer that changes state (a random stream, running statistics) should do so only
    /// when ``isRecomputing`` is false.
    public static func checkpointReplayed<T>(_ value: T) -> T {
        guard let s = segment else { return value }
        return s.replayed(value)
    }

    /// Runs `body` on `inputs` as a checkpoint segment (activation checkpointing, also called
    /// recomputation): the forward pass runs without recording, so nothing inside is kept
    /// for backward but `inputs`; backward runs `body` again, recording, from the same
    /// inputs, back-propagates the outputs' gradients through that graph and passes on the
    /// gradients of `inputs` and of every parameter the body read. Memory for the segment's
    /// activations is then needed only while its gradients are computed, at the cost of a
    /// second forward pass of the segment.
    ///
    /// The gradients equal those without checkpointing (the same kernels on the same values;
    /// a parameter read in several segments sums its contributions segment by segment, so
    /// the last bits may differ). Each parameter's gradient reaches ``Parameter/grad`` once
    /// per segment through the outer backward walk (so `parameterReady` of
    /// ``Tensor/backward(_:parameterReady:)`` fires once, when complete).
    ///
    /// Rules for `body`:
    /// - Every tensor it reads that requires gradients, other than the parameters of the
    ///   layers it calls (found by themselves through ``Parameter/tensor``), must come in
    ///   `inputs`; otherwise backward stops with a message naming the op that reached it.
    /// - It must do the same work each time it runs. Stateful layers replay their state
    ///   (``Dropout`` draws the same mask; batch norm in training mode moves its running
    ///   statistics once); ``BatchNorm2d`` with a ``BatchNorm2d/synchronizer`` is refused.
    ///
    /// When nothing records (inference, or ``Autograd/inference(_:)``), or inside a segment
    /// (its first run or its recomputation), `body` simply runs: segments do not nest.
    ///
    /// - Parameters:
    ///   - inputs: the tensors the body reads (any shapes).
    ///   - body: maps the inputs to the outputs (any number, any shapes).
    /// - Returns: the outputs, tracked when an input or a parameter read requires gradients.
    public static func checkpoint(_ inputs: [Tensor], _ body: @escaping ([Tensor]) -> [Tensor]) -> [Tensor] {
        guard recording, segment == nil else { return body(inputs) }
        let seg = CheckpointSegment()
        let detachedInputs = inputs.map { $0.detached() }
        let outputs = $recording.withValue(false) { $segment.withValue(seg) { body(detachedInputs) } }
        let tracked = inputs.contains { $0.node != nil } || seg.parameterCount > 0
        guard tracked else { return outputs }
        seg.outputGradients = Array(repeating: nil, count: outputs.count)
        // The segment's node stands for all outputs: a scalar that each output's node feeds
        // (with a zero) after noting its gradient, so it runs once, after every output's.
        let parents = inputs.map { $0.node } + seg.parameterLeaves
        let trackedInputs = inputs.map { $0.node != nil }
        let segmentNode = GradNode(op: "checkpoint", shape: [], parents: parents) { _ in
            let grads = seg.recompute(inputs: detachedInputs, tracked: trackedInputs, body: body)
            precondition(grads.count == trackedInputs.count + seg.parameterCount)
            return grads
        }
        return outputs.enumerated().map { i, o in
            let node = GradNode(op: "checkpoint output", shape: o.shape, parents: [segmentNode]) { g in
                seg.outputGradients[i] = g
                return [Tensor(0)]
            }
            return o.withNode(node)
        }
    }

    /// ``checkpoint(_:_:)`` for a body of one input and one output.
    public static func checkpoint(_ input: Tensor, _ body: @escaping (Tensor) -> Tensor) -> Tensor {
        checkpoint([input]) { [body($0[0])] }[0]
    }
}

extension Sequential {
    /// Applies the layers in order in checkpoint segments (``Autograd/checkpoint(_:_:)``) of
    /// `group` consecutive layers each (the last segment may be shorter): backward keeps only
    /// the maps between segments and recomputes one segment at a time. Larger groups keep
    /// fewer maps between segments and need more memory while one is recomputed. For a stage
    /// of residual blocks; for single convolutions one layer per segment keeps as much as no
    /// segments. The same values and gradients as ``callAsFunction(_:)``.
    /// - Precondition: `group >= 1`.
    public func checkpointing(_ x: Tensor, groupsOf group: Int) -> Tensor {
        precondition(group >= 1, "Sequential.checkpointing: groups of \(group) layers; at least 1")
        var y = x
        for start in stride(from: 0, to: layers.count, by: group) {
            let part = Array(layers[start..<min(start + group, layers.count)])
            y = Autograd.checkpoint(y) { part.reduce($0) { t, layer in layer(t) } }
        }
        return y
    }
}
