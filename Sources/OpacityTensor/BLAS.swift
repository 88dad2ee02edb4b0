import CBLAS
import Foundation

/// The OpenBLAS binding: GEMM for the engine, and the choice of kernels.
///
/// Debian's OpenBLAS 0.3.21 picks its kernels at load time from the CPU. On CPUs it does
/// not know it falls back to generic "Prescott" kernels (about a tenth of the speed), and
/// machines often pin `OPENBLAS_CORETYPE` to an older family for safety. Opacity therefore
/// chooses the fastest kernel family the CPU supports (SkylakeX with AVX-512, Haswell with
/// AVX2 and FMA) before its first GEMM, then checks that family's results against a plain
/// reference GEMM on random matrices; if the check fails it falls back to the family
/// OpenBLAS chose itself. Where OpenBLAS chose a family of the same rank under another name
/// (Cooperlake or SapphireRapids on AVX-512 CPUs, Zen on AVX2 ones), Opacity switches too: each
/// family blocks its sums its own way, so one family per instruction set gives the same bits on
/// every such CPU. Measured for Cooperlake only, on an AMD EPYC with AVX-512: sgemm at 2 threads
/// 186.6 GFLOP/s with Cooperlake and with SkylakeX; a network's outputs differed in their last
/// bits between the two, and SkylakeX's matched an Intel CPU's bit for bit. SapphireRapids and
/// Zen are taken as fast as SkylakeX and Haswell by the rank table below (not measured here). `OPACITY_BLAS_CORE` overrides the
/// choice: `keep` leaves
/// OpenBLAS's own choice alone, a family name (`SkylakeX`, `Haswell`, ...) forces it.
///
/// OpenBLAS always runs single-threaded: the engine splits every GEMM over its own
/// compute threads (``Compute``), so OpenBLAS's thread pool and ours never compete for
/// the cores (OpenBLAS's idle workers spin for a while after each call, which would steal
/// a core from the elementwise kernels that follow a convolution).
public enum BLAS {
    /// What kernel selection did, for reports and benchmarks.
    public struct KernelReport: Sendable {
        /// The family OpenBLAS picked on its own (after `OPENBLAS_CORETYPE`).
        public var initial: String
        /// The family in use now.
        public var active: String
        /// Why the active family was chosen.
        public var reason: String
        /// The largest relative difference to the reference GEMM in the self-check.
        public var selfCheckError: Float
    }

    private static let setup: KernelReport = configure()

    /// The kernel report; the first call selects and checks the kernels.
    public static var kernels: KernelReport { setup }

    /// Makes sure kernel selection has run. Cheap after the first call.
    @inline(__always) public static func ensureConfigured() { _ = setup }

    /// Called when ``Compute/threads`` changes. OpenBLAS stays single-threaded; our
    /// own threads split the work.
    static func setThreads(_ n: Int) {
        ensureConfigured()
    }

    /// Runs `body` with OpenBLAS switched to the kernel family `family` (`SkylakeX`,
    /// `Haswell`, `Prescott`, ...), then switches back to the selected family.
    ///
    /// For benchmarks that compare kernel families; not for use while other threads
    /// call into OpenBLAS.
    /// - Returns: `body`'s result, or `nil` when OpenBLAS cannot switch to `family`
    ///   (an unknown name, or a build without dynamic kernel selection).
    public static func withKernels<R>(_ family: String, _ body: () throws -> R) rethrows -> R? {
        ensureConfigured()
        let active = coreNameRaw()
        defer {
            _ = switchKernels(to: active)
            openblas_set_num_threads(1)
        }
        guard switchKernels(to: family) else { return nil }
        openblas_set_num_threads(1)
        return try body()
    }

    /// The name OpenBLAS reports for its active kernels.
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    private static func configure() -> KernelReport {
        let initial = coreNameRaw()
        openblas_set_num_threads(1)
        let request = ProcessInfo.processInfo.environment["OPACITY_BLAS_CORE"] ?? "auto"
        func report(_ reason: String) -> KernelReport {
            KernelReport(initial: initial, active: coreNameRaw(), reason: reason, selfCheckError: selfCheck())
        }
        let target: String
        let why: String
        switch request.lowercased() {
        case "keep":
            return report("OPACITY_BLAS_CORE=keep")
        case "auto":
            guard let best = CPUFeatures.bestOpenBLASFamily() else {
                return report("kept OpenBLAS's choice: no AVX2/FMA or AVX-512 family found for this CPU")
            }
            guard best.lowercased() != initial.lowercased() else {
                return report("the best family this CPU supports")
            }
            guard rank(best) >= rank(initial) else {
                return report("OpenBLAS's own choice ranks above the best family found for this CPU (\(best))")
            }
            target = best
            why =
                rank(best) > rank(initial)
                ? "fastest family this CPU supports"
                : "as fast as OpenBLAS's own choice (\(initial)), and the family every CPU with these instructions runs, for the same results on each"
        default:
            if request.lowercased() == initial.lowercased() { return report("OPACITY_BLAS_CORE=\(request)") }
            target = request
            why = "OPACITY_BLAS_CORE=\(request)"
        }
        guard switchKernels(to: target) else {
            _ = switchKernels(to: initial)
            return report("could not switch OpenBLAS to \(target) (unknown family, or not a DYNAMIC_ARCH build); kept \(initial)")
        }
        let err = selfCheck()
        if !(err <= 1e-4) {
            _ = switchKernels(to: initial)
            return report("\(target) kernels failed the self-check (relative error \(err)); kept \(initial)")
        }
        return KernelReport(initial: initial, active: coreNameRaw(), reason: why, selfCheckError: err)
    }

    private static func coreNameRaw() -> String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// Orders kernel families by speed on x86-64 (unknown names rank lowest).
    private static func rank(_ name: String) -> Int {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return 3
        case "haswell", "zen": return 2
        case "sandybridge", "excavator", "steamroller", "piledriver", "bulldozer": return 1
        default: return 0
        }
    }

    /// Re-runs OpenBLAS's dynamic kernel selection with `OPENBLAS_CORETYPE=name`.
    private static func switchKernels(to name: String) -> Bool {
        guard let handle = dlopen(nil, RTLD_NOW),
              let quitSym = dlsym(handle, "gotoblas_dynamic_quit"),
              let initSym = dlsym(handle, "gotoblas_dynamic_init")
        else { return false }
        typealias VoidFn = @convention(c) () -> Void
        let quit = unsafeBitCast(quitSym, to: VoidFn.self)
        let start = unsafeBitCast(initSym, to: VoidFn.self)
        let previous = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        setenv("OPENBLAS_CORETYPE", name, 1)
        quit()
        start()
        if let previous { setenv("OPENBLAS_CORETYPE", previous, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
        openblas_set_num_threads(1)
        return coreNameRaw().lowercased() == name.lowercased()
    }

    /// Compares OpenBLAS's SGEMM with a plain triple loop on odd-sized random matrices
    /// (all four transpose combinations); returns the largest relative error.
    static func selfCheck() -> Float {
        var rng = RandomGenerator(seed: 12345)
        var worst: Float = 0
        for (m, n, k) in [(67, 45, 129), (130, 257, 64), (8, 300, 33)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = (0..<(m * k)).map { _ in rng.nextUniform() * 2 - 1 }
                let b = (0..<(k * n)).map { _ in rng.nextUniform() * 2 - 1 }
                var c = [Float](repeating: 0, count: m * n)
                a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                    rawGemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 1, a: ap.baseAddress!, lda: ta ? m : k,
                            b: bp.baseAddress!, ldb: tb ? k : n, beta: 0, c: cp.baseAddress!, ldc: n)
                } } }
                for i in 0..<m {
                    for j in 0..<n {
                        var s: Double = 0, mag: Double = 0
                        for p in 0..<k {
                            let av = Double(ta ? a[p * m + i] : a[i * k + p])
                            let bv = Double(tb ? b[j * k + p] : b[p * n + j])
                            s += av * bv
                            mag += abs(av * bv)
                        }
                        let e = Float(abs(Double(c[i * n + j]) - s) / max(mag, 1e-6))
                        worst = max(worst, e.isNaN ? .infinity : e)
                    }
                }
            }
        }
        return worst
    }

    @inline(__always)
    static func rawGemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Row-major SGEMM: `C = alpha * op(A) * op(B) + beta * C`, with `op(A)` `[m, k]` and
    /// `op(B)` `[k, n]`, split over the compute threads.
    ///
    /// Large products are cut into blocks of columns (or of rows, when `C` is tall), one
    /// per thread, each multiplied by single-threaded OpenBLAS. Every element of `C` is
    /// computed by one thread in the same order whatever the split, so results repeat.
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        ensureConfigured()
        let t = min(Compute.threads, max(1, (m * n * k) / (1 << 18)))
        if t <= 1 || (m < 32 && n < 32) {
            gemmSerial(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                       beta: beta, c: c, ldc: ldc)
            return
        }
        if n >= m {
            // Column blocks of C (multiples of 16 columns): B's columns and C's columns.
            let blocks = min(t, (n + 15) / 16)
            Compute.parallelFor(blocks) { i in
                let j0 = (n * i / blocks) & ~15, j1 = i == blocks - 1 ? n : (n * (i + 1) / blocks) & ~15
                guard j1 > j0 else { return }
                gemmSerial(transA: transA, transB: transB, m: m, n: j1 - j0, k: k, alpha: alpha, a: a, lda: lda,
                           b: transB ? b + j0 * ldb : b + j0, ldb: ldb, beta: beta, c: c + j0, ldc: ldc)
            }
        } else {
            let blocks = min(t, (m + 7) / 8)
            Compute.parallelFor(blocks) { i in
                let i0 = (m * i / blocks) & ~7, i1 = i == blocks - 1 ? m : (m * (i + 1) / blocks) & ~7
                guard i1 > i0 else { return }
                gemmSerial(transA: transA, transB: transB, m: i1 - i0, n: n, k: k, alpha: alpha,
                           a: transA ? a + i0 : a + i0 * lda, lda: lda, b: b, ldb: ldb, beta: beta,
                           c: c + i0 * ldc, ldc: ldc)
            }
        }
    }

    /// Row-major SGEMM on the calling thread (for kernels that split work themselves).
    /// Call ``ensureConfigured()`` before entering a parallel region.
    @inline(__always)
    static func gemmSerial(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                           a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                           beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            for i in 0..<m {
                let row = c + i * ldc
                if beta == 0 { row.update(repeating: 0, count: n) } else if beta != 1 { for j in 0..<n { row[j] *= beta } }
            }
            return
        }
        rawGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                beta: beta, c: c, ldc: ldc)
    }

    /// A plain reference SGEMM (no BLAS), for tests.
    public static func referenceGemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                                     a: [Float], b: [Float]) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s: Double = 0
                for p in 0..<k {
                    s += Double(transA ? a[p * m + i] : a[i * k + p]) * Double(transB ? b[j * k + p] : b[p * n + j])
                }
                c[i * n + j] = Float(s)
            }
        }
        return c
    }
}

/// CPU feature detection for kernel selection (x86-64 `cpuid`; other CPUs report none).
enum CPUFeatures {
    static func bestOpenBLASFamily() -> String? {
        #if arch(x86_64)
        guard let flags = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
            .split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return nil }
        let set = Set(flags.split(separator: " ").map(String.init))
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(set.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(set.contains) { return "Haswell" }
        return nil
        #else
        return nil
        #endif
    }
}
