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
    /// What a probe build (``shapeProbe(limit:_:)``) has asked for so far.
    private final class Probe {
        let thread: pthread_t
        let limit: Int
        /// Values the initialisers were asked for, summed (saturating).
        var requested = 0
        /// Whether some tensor was given zero elements instead of its shape's count (over
        /// the limit, or the address space could not hold its lazy mapping).
        var incomplete = false
        init(thread: pthread_t, limit: Int) {
            self.thread = thread
            self.limit = limit
        }
    }

    /// The probe of the thread running ``shapeProbe(limit:_:)``, if any.
    nonisolated(unsafe) private static var probe: Probe?

    /// What a probe build gave: the built value, the number of values its initialisers
    /// asked for, and whether every tensor has its full shape (see ``shapeProbe(limit:_:)``).
    public struct ProbeResult<R> {
        /// What `body` returned (a model whose weights are lazily mapped zeros).
        public var value: R
        /// Values the build's initialisers asked for, in elements (`Float`s): every weight
        /// drawn through an ``Initializer``; vectors a layer makes directly (norm scales
        /// and shifts) are not counted.
        public var requested: Int
        /// `false` when some tensor was made with zero elements (its first dimension 0)
        /// because the build went over the limit or the address space could not map it: the
        /// model's shapes are then not all real; only ``requested`` is.
        public var complete: Bool
    }

    /// Runs `body` (building a model) with every initialiser of this thread returning lazy
    /// zeros (``TensorStorage/init(lazyZeroCount:)``) and drawing no random numbers, and
    /// counts the values asked for. Once the count passes `limit` (or a lazy mapping
    /// fails, e.g. under `ulimit -v`), initialisers return tensors whose first dimension is
    /// 0, so a model of any size is probed in bounded memory and its size is known before
    /// it is built for real.
    /// - Parameters:
    ///   - limit: the most values given real (lazily mapped) shapes.
    ///   - body: the build.
    public static func shapeProbe<R>(limit: Int = .max, _ body: () throws -> R) rethrows -> ProbeResult<R> {
        let p = Probe(thread: pthread_self(), limit: limit)
        lock.lock()
        let saved = probe
        probe = p
        lock.unlock()
        defer { lock.lock(); probe = saved; lock.unlock() }
        let value = try body()
        return ProbeResult(value: value, requested: p.requested, complete: !p.incomplete)
    }

    /// Runs `body` (building a model) with every initialiser of this thread returning lazy
    /// zeros (``TensorStorage/init(lazyZeroCount:)``) and drawing no random numbers: the
    /// model's parameter shapes can be read off before any memory is spent on it, e.g. to
    /// check a file's tensor table against the model a config in the file names.
    /// (``shapeProbe(limit:_:)`` also counts the values.)
    public static func withShapeProbe<R>(_ body: () throws -> R) rethrows -> R {
        try shapeProbe(body).value
    }

    /// Whether the calling thread is running a probe build (``shapeProbe(limit:_:)``).
    package static var probing: Bool {
        lock.lock()
        defer { lock.unlock() }
        return probingHere != nil
    }

    /// Whether the calling thread is running a probe build (held lock).
    private static var probingHere: Probe? {
        guard let p = probe, pthread_equal(p.thread, pthread_self()) != 0 else { return nil }
        return p
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
        if let p = Initializer.probingHere {
            let n = shape.reduce(1) { $0.multipliedReportingOverflow(by: max(0, $1)).overflow ? Int.max : $0 * max(0, $1) }
            let (sum, overflow) = p.requested.addingReportingOverflow(n)
            p.requested = overflow ? .max : sum
            if p.requested <= p.limit, let s = TensorStorage(lazyZeroCount: n) { return Tensor(shape: shape, storage: s) }
            p.incomplete = true
            let empty = shape.isEmpty ? [0] : [0] + shape.dropFirst()
            return Tensor(shape: empty, storage: TensorStorage(uninitializedCount: 0))
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
    /// A probe build (``shapeProbe(limit:_:)``) draws nothing and gets 0.
    public static func nextSeed() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        if probingHere != nil { return 0 }
        return generator.next()
    }
}
