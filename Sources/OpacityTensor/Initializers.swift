import Foundation

/// Weight initialisers, drawing from the engine's seeded generator.
///
/// Models draw their initial weights from one process-wide generator; wrap model
/// construction in ``withSeed(_:_:)`` to make it repeatable (the same seed gives the same
/// weights on every run).
public enum Initializer: Sendable {
    /// Zeros.
    case zeros
    /// A constant.
    case constant(Float)
    /// He (Kaiming) normal: std `sqrt(2 / fan)`; `fanOut` counts `out * kh * kw` as the paper's
    /// heads do, otherwise `in * kh * kw`.
    case heNormal(fanOut: Bool)
    /// PyTorch's default for convolutions and linear layers: uniform in `+-1/sqrt(fan_in)`.
    case pytorchDefault
    /// Normal with the given standard deviation.
    case normal(std: Float)
    /// Uniform in `[lo, hi)`.
    case uniform(Float, Float)

    nonisolated(unsafe) private static var generator = RandomGenerator(seed: 0x0AC1_7E5D)
    private static let lock = NSLock()
    /// The thread running ``withShapeProbe(_:)``, if any.
    nonisolated(unsafe) private static var probeThread: pthread_t?

    /// Runs `body` (building a model) with every initialiser of this thread returning lazy
    /// zeros (``TensorStorage/init(lazyZeroCount:)``) and drawing no random numbers: the
    /// model's parameter shapes can be read off before any memory is spent on it, e.g. to
    /// check a file's tensor table against the model a config in the file names.
    public static func withShapeProbe<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        let saved = probeThread
        probeThread = pthread_self()
        lock.unlock()
        defer { lock.lock(); probeThread = saved; lock.unlock() }
        return try body()
    }

    /// Runs `body` with the initialisation generator reset to `seed`.
    public static func withSeed<R>(_ seed: UInt64, _ body: () throws -> R) rethrows -> R {
        lock.lock()
        let saved = generator
        generator = RandomGenerator(seed: seed)
        lock.unlock()
        defer { lock.lock(); generator = saved; lock.unlock() }
        return try body()
    }

    /// A tensor of `shape` (`[out, in, kh, kw]` or `[out, in]` for weights) filled by this rule.
    public func make(_ shape: [Int]) -> Tensor {
        let fanIn = shape.count >= 2 ? shape[1...].reduce(1, *) : (shape.first ?? 1)
        let fanOut = shape.count >= 2 ? shape[0] * shape[2...].reduce(1, *) : (shape.first ?? 1)
        Initializer.lock.lock()
        defer { Initializer.lock.unlock() }
        if let t = Initializer.probeThread, pthread_equal(t, pthread_self()) != 0 {
            let n = shape.reduce(1, *)
            if let s = TensorStorage(lazyZeroCount: n) { return Tensor(shape: shape, storage: s) }
        }
        switch self {
        case .zeros: return .zeros(shape)
        case .constant(let v): return Tensor(shape: shape, repeating: v)
        case .heNormal(let out):
            return .randomNormal(shape, std: (2 / Float(max(1, out ? fanOut : fanIn))).squareRoot(), using: &Initializer.generator)
        case .pytorchDefault:
            let b = 1 / Float(max(1, fanIn)).squareRoot()
            return .randomUniform(shape, -b, b, using: &Initializer.generator)
        case .normal(let std): return .randomNormal(shape, std: std, using: &Initializer.generator)
        case .uniform(let lo, let hi): return .randomUniform(shape, lo, hi, using: &Initializer.generator)
        }
    }

    /// A seed drawn from the initialisation generator (for dropout layers built with a model).
    public static func nextSeed() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        return generator.next()
    }
}
