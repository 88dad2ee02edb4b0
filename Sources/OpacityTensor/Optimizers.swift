import Foundation

/// An optimizer updates parameters from their accumulated gradients.
public protocol Optimizer: AnyObject {
    /// The learning rate of the next step.
    var learningRate: Float { get set }
    /// Applies one update to every parameter that has a gradient.
    func step()
    /// Drops all gradients.
    func zeroGrad()
    /// The optimizer's state (moments, step counts) by name, for checkpoints.
    func stateDict() -> [String: Tensor]
    /// Restores state saved by ``stateDict()``.
    /// - Throws: when a tensor is missing or mis-shaped (nothing changes then).
    func loadStateDict(_ state: [String: Tensor]) throws
}

/// An error restoring optimizer or scheduler state.
public struct OptimizerStateError: Error, CustomStringConvertible, Sendable {
    /// What was missing or mis-shaped.
    public let description: String
}

/// Adam with PyTorch's semantics (`torch.optim.Adam`, L2 `weightDecay` added to the gradient).
public final class Adam: Optimizer {
    /// The step size of the next step (schedulers change it).
    public var learningRate: Float
    /// PyTorch's `betas`, `eps` and `weight_decay` (L2, added to the gradient).
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    /// The parameters with their names (the names key the saved state).
    public let parameters: [(String, Parameter)]
    private var m: [Tensor?]
    private var v: [Tensor?]
    private var steps: [Int]

    /// - Parameter parameters: named parameters (the names key the saved state).
    public init(_ parameters: [(String, Parameter)], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                eps: Float = 1e-8, weightDecay: Float = 0) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        m = Array(repeating: nil, count: parameters.count)
        v = Array(repeating: nil, count: parameters.count)
        steps = Array(repeating: 0, count: parameters.count)
    }

    /// One Adam update of every parameter that requires and has a gradient.
    public func step() {
        for (i, (_, p)) in parameters.enumerated() where p.requiresGrad {
            guard let g = p.grad else { continue }
            steps[i] += 1
            let t = Float(steps[i])
            if m[i] == nil { m[i] = .longLivedZeros(p.shape); v[i] = .longLivedZeros(p.shape) }
            let bc1 = 1 - Foundation.pow(beta1, t), bc2 = 1 - Foundation.pow(beta2, t)
            let stepSize = learningRate / bc1, bc2Sqrt = bc2.squareRoot()
            let hyper = AdamStep(beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay, stepSize: stepSize, bc2Sqrt: bc2Sqrt)
            let gp = g.storage.base
            m[i]!.withUnsafeMutableBufferPointer { mb in
                v[i]!.withUnsafeMutableBufferPointer { vb in
                    p.value.withUnsafeMutableBufferPointer { pb in
                        KernelProviders.optimizer.adam(parameter: pb.baseAddress!, gradient: gp, m: mb.baseAddress!, v: vb.baseAddress!,
                                                       count: pb.count, step: hyper)
                    }
                }
            }
        }
    }

    /// Drops every parameter's gradient.
    public func zeroGrad() { for (_, p) in parameters { p.zeroGrad() } }

    /// The learning rate and per-parameter state, keyed by parameter name.
    public func stateDict() -> [String: Tensor] {
        var s: [String: Tensor] = ["lr": Tensor(learningRate)]
        for (i, (name, _)) in parameters.enumerated() {
            guard let mi = m[i], let vi = v[i] else { continue }
            s["exp_avg.\(name)"] = mi
            s["exp_avg_sq.\(name)"] = vi
            s["step.\(name)"] = Tensor(Float(steps[i]))
        }
        return s
    }

    /// Restores ``stateDict()``; parameters without saved state start fresh.
    /// - Throws: ``OptimizerStateError`` for mis-shaped state (nothing changes then).
    public func loadStateDict(_ state: [String: Tensor]) throws {
        var nm = m, nv = v, ns = steps
        for (i, (name, p)) in parameters.enumerated() {
            guard let mi = state["exp_avg.\(name)"], let vi = state["exp_avg_sq.\(name)"], let si = state["step.\(name)"] else {
                nm[i] = nil; nv[i] = nil; ns[i] = 0
                continue
            }
            guard mi.shape == p.shape, vi.shape == p.shape else {
                throw OptimizerStateError(description: "Adam state for \(name) has shape \(describe(mi.shape)), parameter has \(describe(p.shape))")
            }
            nm[i] = mi; nv[i] = vi; ns[i] = Int(si.scalar)
        }
        m = nm; v = nv; steps = ns
        if let lr = state["lr"] { learningRate = lr.scalar }
    }
}

/// Stochastic gradient descent with momentum, PyTorch's semantics (`torch.optim.SGD`).
public final class SGD: Optimizer {
    /// The step size of the next step (schedulers change it).
    public var learningRate: Float
    /// PyTorch's `momentum`, `dampening`, `weight_decay` and `nesterov`.
    public let momentum: Float, dampening: Float, weightDecay: Float, nesterov: Bool
    /// The parameters with their names (the names key the saved state).
    public let parameters: [(String, Parameter)]
    private var buffers: [Tensor?]

    /// - Parameter parameters: named parameters (the names key the saved state).
    public init(_ parameters: [(String, Parameter)], learningRate: Float, momentum: Float = 0, dampening: Float = 0,
                weightDecay: Float = 0, nesterov: Bool = false) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        buffers = Array(repeating: nil, count: parameters.count)
    }

    /// One SGD update of every parameter that requires and has a gradient.
    public func step() {
        for (i, (_, p)) in parameters.enumerated() where p.requiresGrad {
            guard let g = p.grad else { continue }
            let gp = g.storage.base
            let (mu, damp, wd, lr) = (momentum, dampening, weightDecay, learningRate)
            if mu == 0 {
                p.value.withUnsafeMutableBufferPointer { pb in for j in 0..<pb.count { pb[j] -= lr * (gp[j] + wd * pb[j]) } }
                continue
            }
            let first = buffers[i] == nil
            if first { buffers[i] = .longLivedZeros(p.shape) }
            let nest = nesterov
            buffers[i]!.withUnsafeMutableBufferPointer { bb in
                p.value.withUnsafeMutableBufferPointer { pb in
                    for j in 0..<pb.count {
                        let gj = gp[j] + wd * pb[j]
                        bb[j] = first ? gj : mu * bb[j] + (1 - damp) * gj
                        pb[j] -= lr * (nest ? gj + mu * bb[j] : bb[j])
                    }
                }
            }
        }
    }

    /// Drops every parameter's gradient.
    public func zeroGrad() { for (_, p) in parameters { p.zeroGrad() } }

    /// The learning rate and per-parameter state, keyed by parameter name.
    public func stateDict() -> [String: Tensor] {
        var s: [String: Tensor] = ["lr": Tensor(learningRate)]
        for (i, (name, _)) in parameters.enumerated() { if let b = buffers[i] { s["momentum_buffer.\(name)"] = b } }
        return s
    }

    /// Restores ``stateDict()``; parameters without saved state start fresh.
    /// - Throws: ``OptimizerStateError`` for mis-shaped state (nothing changes then).
    public func loadStateDict(_ state: [String: Tensor]) throws {
        var nb = buffers
        for (i, (name, p)) in parameters.enumerated() {
            if let b = state["momentum_buffer.\(name)"] {
                guard b.shape == p.shape else {
                    throw OptimizerStateError(description: "SGD state for \(name) has shape \(describe(b.shape)), parameter has \(describe(p.shape))")
                }
                nb[i] = b
            } else { nb[i] = nil }
        }
        buffers = nb
        if let lr = state["lr"] { learningRate = lr.scalar }
    }
}

/// Scales all gradients so their joint L2 norm is at most `maxNorm`
/// (`torch.nn.utils.clip_grad_norm_`, with its `1e-6` guard).
/// - Returns: the norm before clipping.
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    // Each parameter's sum of squares on one thread (parameters spread over the threads),
    // then added in parameter order: the same result whatever the thread count.
    let kernels = KernelProviders.optimizer
    let grads = parameters.map(\.grad)
    var sums = [Double](repeating: 0, count: grads.count)
    sums.withUnsafeMutableBufferPointer { sb in
        let out = sb.baseAddress!
        Compute.parallelFor(grads.count) { i in
            if let g = grads[i] { out[i] = kernels.sumOfSquares(g.pointer, count: g.count) }
        }
    }
    let total = sums.reduce(0, +)
    let norm = Float(total.squareRoot())
    let coef = maxNorm / (norm + 1e-6)
    if coef < 1 {
        for p in parameters where p.grad != nil {
            // In place: the gradient is copied only if something else shares its storage.
            p.grad!.withUnsafeMutableBufferPointer { kernels.scale($0.baseAddress!, count: $0.count, by: coef) }
        }
    }
    return norm
}

/// Reduces the learning rate when a metric stops improving, with PyTorch's semantics
/// (`torch.optim.lr_scheduler.ReduceLROnPlateau`).
public final class ReduceLROnPlateau: Codable {
    /// Whether lower (`min`, a loss) or higher (`max`, a score) metrics are better.
    public enum Mode: String, Codable, Sendable { case min, max }
    /// Whether `threshold` is relative to the best value or absolute.
    public enum ThresholdMode: String, Codable, Sendable { case rel, abs }

    /// See ``Mode``.
    public let mode: Mode
    /// The learning rate is multiplied by this when reduced (< 1).
    public let factor: Float
    /// Epochs without improvement tolerated before reducing.
    public let patience: Int
    /// How much better a metric must be to count as an improvement.
    public let threshold: Float
    /// See ``ThresholdMode``.
    public let thresholdMode: ThresholdMode
    /// Epochs to wait after a reduction before counting bad epochs again.
    public let cooldown: Int
    /// The learning rate never goes below this.
    public let minLR: Float
    /// Reductions smaller than this are skipped.
    public let eps: Float
    /// The best metric so far.
    public private(set) var best: Float
    /// Consecutive epochs without improvement.
    public private(set) var numBadEpochs = 0
    /// Epochs of cooldown left.
    public private(set) var cooldownCounter = 0
    /// Epochs seen.
    public private(set) var lastEpoch = 0

    /// A scheduler with PyTorch's defaults.
    public init(mode: Mode = .min, factor: Float = 0.1, patience: Int = 10, threshold: Float = 1e-4,
                thresholdMode: ThresholdMode = .rel, cooldown: Int = 0, minLR: Float = 0, eps: Float = 1e-8) {
        precondition(factor < 1, "ReduceLROnPlateau: factor must be < 1")
        self.mode = mode
        self.factor = factor
        self.patience = patience
        self.threshold = threshold
        self.thresholdMode = thresholdMode
        self.cooldown = cooldown
        self.minLR = minLR
        self.eps = eps
        best = mode == .min ? .infinity : -.infinity
    }

    private func isBetter(_ a: Float) -> Bool {
        switch (mode, thresholdMode) {
        case (.min, .rel): return a < best * (1 - threshold)
        case (.min, .abs): return a < best - threshold
        case (.max, .rel): return a > best * (threshold + 1)
        case (.max, .abs): return a > best + threshold
        }
    }

    /// Records one epoch's metric and lowers the optimizer's learning rate when due.
    /// - Returns: whether the learning rate was reduced.
    @discardableResult
    public func step(_ metric: Float, optimizer: Optimizer) -> Bool {
        lastEpoch += 1
        if isBetter(metric) {
            best = metric
            numBadEpochs = 0
        } else {
            numBadEpochs += 1
        }
        if cooldownCounter > 0 {
            cooldownCounter -= 1
            numBadEpochs = 0
        }
        if numBadEpochs > patience {
            let old = optimizer.learningRate
            let new = max(old * factor, minLR)
            var reduced = false
            if old - new > eps {
                optimizer.learningRate = new
                reduced = true
            }
            cooldownCounter = cooldown
            numBadEpochs = 0
            return reduced
        }
        return false
    }
}
