import Foundation

// The per-shape choice of convolution kernels: which provider computes each convolution
// shape and direction (forward, input gradient, weight gradient).
//
// In `auto` mode each shape is measured once, at first use: both candidates (the CPU
// kernels, with Winograd where it is eligible; oneDNN with its reorders) run once to warm up
// (oneDNN builds its primitives then) and then ``ConvolutionKernelChoice/timedRounds`` times
// each, interleaved (the order alternating per round), and oneDNN is kept for the life of the
// process only when its best time beats the CPU kernels' best by the margin
// (``ConvolutionKernelChoice/margin``), so that noise on a shared machine cannot flip a close
// choice. The choices can be kept in a file (`OPACITY_CONV_CHOICES`) that later processes read
// back instead of measuring again.

/// Which convolution kernels run, and what ran.
///
/// - `OPACITY_CONV=cpu|dnnl|auto` sets the mode at start (default `cpu`).
/// - `OPACITY_DETERMINISTIC=1` fixes the kernels to the CPU provider whatever the mode: its
///   path per shape is fixed (Winograd for eligible 3x3 stride-1 convolutions when
///   ``ConvolutionSettings/winograd`` is on, for the weight gradient also when
///   ``ConvolutionSettings/winogradWeightGradient`` is, else im2col, row expansion or the
///   depthwise kernel), so runs repeat bit for bit at a fixed thread count. A measured choice can differ
///   between runs (timings vary), and oneDNN's results differ from ours by rounding.
public enum ConvolutionKernelChoice {
    /// A way to choose the convolution kernels.
    public enum Mode: String, Sendable, CaseIterable {
        /// The engine's own CPU kernels (`Kernels/CPU/`).
        case cpu
        /// oneDNN (`Kernels/DNNL/`) for every convolution it can run.
        case dnnl
        /// Measure the candidates per shape at first use and keep the fastest.
        case auto
    }

    nonisolated(unsafe) private static var _mode: Mode = {
        let env = ProcessInfo.processInfo.environment
        return env["OPACITY_CONV"].flatMap { Mode(rawValue: $0.lowercased()) } ?? .cpu
    }()

    nonisolated(unsafe) private static var _deterministic: Bool = {
        ProcessInfo.processInfo.environment["OPACITY_DETERMINISTIC"] == "1"
    }()

    /// The requested mode (`OPACITY_CONV`, default ``Mode/cpu``). Set it before running
    /// kernels, not while they run.
    public static var mode: Mode {
        get { _mode }
        set { _mode = newValue }
    }

    /// Bit-exact runs (`OPACITY_DETERMINISTIC=1`): the CPU kernels whatever ``mode`` says.
    public static var deterministic: Bool {
        get { _deterministic }
        set { _deterministic = newValue }
    }

    /// The mode in force: ``Mode/cpu`` when ``deterministic``, or when oneDNN is unavailable.
    public static var effectiveMode: Mode {
        if _deterministic || !DNNLConvolutionKernels.isAvailable { return .cpu }
        return _mode
    }

    /// What one distinct convolution (shape and direction) ran.
    public struct Record: Sendable {
        /// `forward`, `backward-data` or `backward-weights`.
        public var direction: String
        /// `3x3/2 64->128 (g1) @ [N, C, H, W]`: kernel, stride, channels, groups, input shape.
        public var shape: String
        /// The kernel that ran: `cpu:winograd`, `cpu:im2col`, `dnnl(jit:avx512_core)` (oneDNN's implementation name), ...
        public var kernel: String
        /// The candidates' best measured times in seconds (`auto` mode only), by kernel name.
        public var timings: [String: Double]
        /// How many times it ran.
        public var calls: Int
    }

    /// Every distinct convolution run since the last ``resetReport()``, in order of first use.
    public static func report() -> [Record] { ConvolutionSelector.shared.records() }

    /// Clears the report (not the measured choices).
    public static func resetReport() { ConvolutionSelector.shared.resetRecords() }

    /// Forgets the measured choices (the next use of each shape measures again; a choices
    /// file is read again).
    public static func resetChoices() { ConvolutionSelector.shared.resetChoices() }

    nonisolated(unsafe) private static var _margin: Double = {
        if let s = ProcessInfo.processInfo.environment["OPACITY_CONV_AUTO_MARGIN"], let m = Double(s), m >= 0, m < 1 { return m }
        return 0.1
    }()

    /// In `auto` mode, oneDNN is chosen only when its best time is below `(1 - margin)` times
    /// the CPU kernels' best (default 0.1, that is 10% faster; `OPACITY_CONV_AUTO_MARGIN`,
    /// from 0 up to 1). Set it before running kernels.
    public static var margin: Double {
        get { _margin }
        set { _margin = min(max(newValue, 0), 0.99) }
    }

    /// When oneDNN's reordered weights are cached on the weight's storage (per weight version,
    /// from the second use at one version on; see ``TensorStorage``'s derived values).
    public enum WeightCache: String, Sendable, CaseIterable {
        /// Never: every call reorders the weights.
        case off
        /// Forward passes that record no graph (``Autograd/inference(_:)``: detect, eval,
        /// serve). The default: in training the weights change at every step and most are used
        /// once per version, and the kept copies raised the training peak of the detectors at
        /// 256 px by 160-310 MiB with no measurable gain per step (Documentation/Benchmarks.md).
        case inference
        /// The forward pass and the input gradient, always.
        case always
    }

    nonisolated(unsafe) private static var _oneDNNWeightCache: WeightCache = {
        switch ProcessInfo.processInfo.environment["OPACITY_DNNL_WEIGHT_CACHE"]?.lowercased() {
        case "0", "off": .off
        case "1", "always": .always
        default: .inference
        }
    }()

    /// When the weights' reorder into oneDNN's layout is cached (default
    /// ``WeightCache/inference``; `OPACITY_DNNL_WEIGHT_CACHE=0|off`, `inference`, `1|always` at
    /// start). Whichever, the results are the same bit for bit (a reorder only moves values),
    /// and a weight changed in place is reordered again. Set it before running kernels, not
    /// while they run.
    public static var oneDNNWeightCache: WeightCache {
        get { _oneDNNWeightCache }
        set { _oneDNNWeightCache = newValue }
    }

    /// Timed runs per candidate when `auto` measures a shape (after one warm-up run each): 3.
    public static let timedRounds = 3

    nonisolated(unsafe) private static var _choicesFile: String? = {
        ProcessInfo.processInfo.environment["OPACITY_CONV_CHOICES"].flatMap { $0.isEmpty ? nil : $0 }
    }()

    /// A text file that keeps the `auto` choices across processes (`OPACITY_CONV_CHOICES`;
    /// default none). At the first choice the file's lines are read (a missing file is an
    /// empty one), and each new measurement appends a line, so a second process (or a resumed
    /// training run) at the same thread count runs the same kernels without measuring. One
    /// line per shape and direction: `v1 DIRECTION INPUT WEIGHT STRIDE PADDING DILATION GROUPS
    /// BIAS THREADS CHOICE CPU_SECONDS DNNL_SECONDS` (shapes as comma-separated integers,
    /// `DIRECTION` one of `forward`, `backward-data`, `backward-weights`, `CHOICE` one of
    /// `cpu`, `dnnl`); a later line for the same key wins. A line that does not parse is
    /// skipped with a warning on standard error naming the file and line. Set it before
    /// running kernels.
    public static var choicesFile: String? {
        get { _choicesFile }
        set {
            _choicesFile = newValue
            ConvolutionSelector.shared.resetChoices()
        }
    }
}

/// A candidate provider of the per-shape choice.
enum ConvolutionCandidate: String, Sendable, CaseIterable {
    case cpu
    case dnnl
}

/// The choices and the report, shared by every call.
final class ConvolutionSelector: @unchecked Sendable {
    static let shared = ConvolutionSelector()

    struct Key: Hashable {
        var direction: DNNLConvKey.Direction
        var input: [Int], weight: [Int]
        var stride: [Int], padding: [Int], dilation: [Int]
        var groups: Int
        var bias: Bool
        var threads: Int
    }

    private let lock = NSLock()
    /// Whether ``ConvolutionKernelChoice/choicesFile`` has been read since the last reset.
    private var loaded = false
    private var choices: [Key: ConvolutionCandidate] = [:]
    private var timings: [Key: [String: Double]] = [:]
    private var order: [Key] = []
    private var used: [Key: (kernel: String, calls: Int)] = [:]

    func choice(_ k: Key) -> ConvolutionCandidate? {
        lock.lock()
        defer { lock.unlock() }
        loadIfNeeded()
        return choices[k]
    }

    func setChoice(_ c: ConvolutionCandidate, timings t: [String: Double], for k: Key) {
        lock.lock()
        defer { lock.unlock() }
        loadIfNeeded()
        choices[k] = c
        timings[k] = t
        if let path = ConvolutionKernelChoice.choicesFile { Self.append(Self.line(k, c, t), to: path) }
    }

    private static func directionName(_ d: DNNLConvKey.Direction) -> String {
        switch d {
        case .forward: "forward"
        case .backwardData: "backward-data"
        case .backwardWeights: "backward-weights"
        }
    }

    /// The choices file's line for a choice (see ``ConvolutionKernelChoice/choicesFile``).
    static func line(_ k: Key, _ c: ConvolutionCandidate, _ t: [String: Double]) -> String {
        func list(_ v: [Int]) -> String { v.map(String.init).joined(separator: ",") }
        let times = ["cpu", "dnnl"].map { t[$0].map { String(format: "%.6g", $0) } ?? "-" }
        return [
            "v1", directionName(k.direction), list(k.input), list(k.weight), list(k.stride), list(k.padding), list(k.dilation),
            String(k.groups), k.bias ? "1" : "0", String(k.threads), c.rawValue,
        ].joined(separator: " ") + " " + times.joined(separator: " ")
    }

    /// Parses a line of the choices file; nil when it is not one.
    static func parse(_ line: Substring) -> (Key, ConvolutionCandidate, [String: Double])? {
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        guard f.count == 13, f[0] == "v1" else { return nil }
        let directions: [String: DNNLConvKey.Direction] = [
            "forward": .forward, "backward-data": .backwardData, "backward-weights": .backwardWeights,
        ]
        func list(_ s: Substring, _ n: Int) -> [Int]? {
            let v = s.split(separator: ",").compactMap { Int($0) }
            return v.count == n && v.allSatisfy { $0 >= 0 } ? v : nil
        }
        guard let d = directions[String(f[1])], let input = list(f[2], 4), let weight = list(f[3], 4), let stride = list(f[4], 2),
            let padding = list(f[5], 2), let dilation = list(f[6], 2), let groups = Int(f[7]), groups >= 1, f[8] == "0" || f[8] == "1",
            let threads = Int(f[9]), threads >= 1, let c = ConvolutionCandidate(rawValue: String(f[10]))
        else { return nil }
        var t: [String: Double] = [:]
        for (name, field) in [("cpu", f[11]), ("dnnl", f[12])] where field != "-" {
            guard let v = Double(field), v >= 0 else { return nil }
            t[name] = v
        }
        let k = Key(
            direction: d, input: input, weight: weight, stride: stride, padding: padding, dilation: dilation, groups: groups,
            bias: f[8] == "1", threads: threads)
        return (k, c, t)
    }

    /// Reads the choices file once (with ``lock`` held).
    private func loadIfNeeded() {
        guard !loaded else { return }
        loaded = true
        guard let path = ConvolutionKernelChoice.choicesFile, FileManager.default.fileExists(atPath: path) else { return }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            Self.warn("opacity: warning: OPACITY_CONV_CHOICES file \(path) cannot be read as UTF-8 text; measuring instead")
            return
        }
        for (i, l) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = l.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { continue }
            guard let (k, c, t) = Self.parse(Substring(trimmed)) else {
                Self.warn(
                    "opacity: warning: OPACITY_CONV_CHOICES file \(path), line \(i + 1): expected 'v1 DIRECTION INPUT WEIGHT STRIDE "
                        + "PADDING DILATION GROUPS BIAS THREADS cpu|dnnl CPU_SECONDS DNNL_SECONDS', got '\(trimmed.prefix(120))'; skipped")
                continue
            }
            choices[k] = c
            timings[k] = t
        }
    }

    private static func warn(_ s: String) { try? FileHandle.standardError.write(contentsOf: Data((s + "\n").utf8)) }

    /// Appends `line` to the file at `path` (created when missing) in one write.
    private static func append(_ line: String, to path: String) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else {
            let code = errno
            warn("opacity: warning: cannot write the OPACITY_CONV_CHOICES file \(path): \(String(cString: strerror(code)))")
            return
        }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if written != bytes.count { warn("opacity: warning: short write to the OPACITY_CONV_CHOICES file \(path)") }
    }

    func note(_ k: Key, kernel: String) {
        lock.lock()
        defer { lock.unlock() }
        if let u = used[k] {
            used[k] = (u.kernel == kernel ? kernel : "\(u.kernel), \(kernel)", u.calls + 1)
        } else {
            order.append(k)
            used[k] = (kernel, 1)
        }
    }

    func records() -> [ConvolutionKernelChoice.Record] {
        lock.lock()
        defer { lock.unlock() }
        return order.map { k in
            let d = Self.directionName(k.direction)
            let w = k.weight
            let s = k.stride == [1, 1] ? "" : "/\(k.stride[0])"
            let dil = k.dilation == [1, 1] ? "" : " d\(k.dilation[0])"
            let shape = "\(w[2])x\(w[3])\(s)\(dil) \(k.input[1])->\(w[0]) (g\(k.groups)) @ \(k.input)"
            return .init(direction: d, shape: shape, kernel: used[k]!.kernel, timings: timings[k] ?? [:], calls: used[k]!.calls)
        }
    }

    func resetRecords() {
        lock.lock()
        defer { lock.unlock() }
        order = []
        used = [:]
    }

    func resetChoices() {
        lock.lock()
        defer { lock.unlock() }
        choices = [:]
        timings = [:]
        loaded = false
    }
}

/// The provider ``KernelProviders/convolution`` uses: per call, the CPU kernels, oneDNN, or
/// the measured fastest of them (see ``ConvolutionKernelChoice``).
struct SelectingConvolutionKernels: ConvolutionKernels {
    private let cpu = CPUConvolutionKernels()
    private let onednn = DNNLConvolutionKernels()
    private var selector: ConvolutionSelector { .shared }

    private func key(_ d: DNNLConvKey.Direction, _ input: Tensor, _ weight: Tensor, _ g: Conv2DGeometry, _ groups: Int, _ bias: Bool)
        -> ConvolutionSelector.Key
    {
        key(d, input.shape, weight.shape, g, groups, bias)
    }

    private func key(_ d: DNNLConvKey.Direction, _ input: [Int], _ weight: [Int], _ g: Conv2DGeometry, _ groups: Int, _ bias: Bool)
        -> ConvolutionSelector.Key
    {
        .init(
            direction: d, input: input, weight: weight, stride: [g.stride.0, g.stride.1],
            padding: [g.padding.0, g.padding.1], dilation: [g.dilation.0, g.dilation.1], groups: groups, bias: bias,
            threads: Compute.threads)
    }

    /// The name of the kernel `c` runs for `k`: the CPU path, or oneDNN's implementation.
    private func kernelName(_ c: ConvolutionCandidate, _ k: ConvolutionSelector.Key) -> String {
        guard c != .cpu else { return "cpu:" + Self.cpuPath(k) }
        let g = Conv2DGeometry(
            kernel: (k.weight[2], k.weight[3]), stride: (k.stride[0], k.stride[1]), padding: (k.padding[0], k.padding[1]),
            dilation: (k.dilation[0], k.dilation[1]))
        let impl =
            onednn.implementation(k.direction, input: k.input, weight: k.weight, geometry: g, groups: k.groups, bias: k.bias) ?? "?"
        return "\(c.rawValue)(\(impl))"
    }

    /// The CPU kernels' own path for a shape (as `ConvKernels` decides it).
    static func cpuPath(_ k: ConvolutionSelector.Key) -> String {
        let g = Conv2DGeometry(
            kernel: (k.weight[2], k.weight[3]), stride: (k.stride[0], k.stride[1]), padding: (k.padding[0], k.padding[1]),
            dilation: (k.dilation[0], k.dilation[1]))
        let plan = ConvPlan(input: k.input, cout: k.weight[0], geo: g, groups: k.groups)
        if ConvKernels.isDepthwise(cin: plan.cin, groups: k.groups) { return "depthwise" }
        switch k.direction {
        case .forward:
            if plan.rowExpansion { return "row-expansion" }
            if ConvolutionSettings.winograd && plan.winogradEligible { return "winograd" }
            if plan.usesWinograd2 { return "winograd2x2" }
            return plan.pointwise ? "gemm-1x1" : "im2col"
        case .backwardData:
            return g.stride == (1, 1) ? "transposed-forward" : "col2im"
        case .backwardWeights:
            if plan.rowExpansion { return "row-expansion" }
            return plan.usesWinogradWeightGradient ? "winograd" : plan.usesWinograd2WeightGradient ? "winograd2x2" : "im2col"
        }
    }

    /// The candidate for `k`: the forced one, or the measured choice (nil: not measured yet).
    private func forced() -> ConvolutionCandidate? {
        switch ConvolutionKernelChoice.effectiveMode {
        case .cpu: .cpu
        case .dnnl: .dnnl
        case .auto: nil
        }
    }

    private static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Times `run` for each candidate (one warm-up each, then
    /// ``ConvolutionKernelChoice/timedRounds`` rounds, the candidates' order alternating) and
    /// returns the choice, the candidates' best times, and whether the last run was the
    /// choice's. oneDNN is chosen only when its best time is below `1 - margin` times the CPU
    /// kernels' best (``ConvolutionKernelChoice/margin``). A candidate whose `run` returns false
    /// (oneDNN cannot run the shape) drops out.
    private func measure(_ run: (ConvolutionCandidate) -> Bool) -> (ConvolutionCandidate, [String: Double], lastWasBest: Bool) {
        var alive: [ConvolutionCandidate] = []
        for c in ConvolutionCandidate.allCases where run(c) { alive.append(c) }
        var best: [ConvolutionCandidate: Double] = [:]
        var last = ConvolutionCandidate.cpu
        for round in 0..<ConvolutionKernelChoice.timedRounds {
            for c in round % 2 == 0 ? alive : alive.reversed() {
                let t0 = Self.now()
                _ = run(c)
                let t = Double(Self.now() - t0) * 1e-9
                best[c] = min(best[c] ?? .infinity, t)
                last = c
            }
        }
        let winner = Self.choose(best, margin: ConvolutionKernelChoice.margin)
        var named: [String: Double] = [:]
        for (c, t) in best { named[c.rawValue] = t }
        return (winner, named, last == winner)
    }

    /// The choice from the candidates' best times: oneDNN only when it beats the CPU kernels
    /// by more than `margin` (the CPU kernels when either time is missing).
    static func choose(_ best: [ConvolutionCandidate: Double], margin: Double) -> ConvolutionCandidate {
        guard let d = best[.dnnl] else { return .cpu }
        guard let c = best[.cpu] else { return .dnnl }
        return d < (1 - margin) * c ? .dnnl : .cpu
    }

    func forward(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int, into out: Tensor) {
        ConvolutionKernelLog.timed("forward", input: input.shape, weight: weight.shape, geometry: geometry, groups: groups) {
            selectForward(input: input, weight: weight, bias: bias, geometry: geometry, groups: groups, into: out)
        }
    }

    /// In place only where the CPU kernels are this shape's choice already (forced, or measured
    /// before): measuring the candidates runs each on the same input.
    func forwardInPlace(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int) -> Bool {
        let k = key(.forward, input, weight, geometry, groups, bias != nil)
        guard (forced() ?? selector.choice(k)) == .cpu else { return false }
        let done = ConvolutionKernelLog.timed("forward", input: input.shape, weight: weight.shape, geometry: geometry, groups: groups) {
            cpu.forwardInPlace(input: input, weight: weight, bias: bias, geometry: geometry, groups: groups)
        }
        if done { note(.cpu, k) }
        return done
    }

    private func selectForward(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int, into out: Tensor) {
        let k = key(.forward, input, weight, geometry, groups, bias != nil)
        func run(_ c: ConvolutionCandidate) -> Bool {
            if c == .cpu {
                cpu.forward(input: input, weight: weight, bias: bias, geometry: geometry, groups: groups, into: out)
                return true
            }
            return onednn.tryForward(input: input, weight: weight, bias: bias, geometry: geometry, groups: groups, into: out)
        }
        var c = forced() ?? selector.choice(k)
        if c == nil {
            let (w, t, lastWasBest) = measure(run)
            selector.setChoice(w, timings: t, for: k)
            if !lastWasBest { _ = run(w) }
            c = w
        } else if !run(c!) {
            c = .cpu
            _ = run(.cpu)
        }
        note(c!, k)
    }

    /// Records the kernel in the report, and oneDNN's runs in ``ConvolutionKernelLog`` (the
    /// CPU kernels note their own path there).
    private func note(_ c: ConvolutionCandidate, _ k: ConvolutionSelector.Key) {
        let name = kernelName(c, k)
        selector.note(k, kernel: name)
        guard c == .dnnl else { return }
        let g = Conv2DGeometry(
            kernel: (k.weight[2], k.weight[3]), stride: (k.stride[0], k.stride[1]), padding: (k.padding[0], k.padding[1]),
            dilation: (k.dilation[0], k.dilation[1]))
        let plan = ConvPlan(input: k.input, cout: k.weight[0], geo: g, groups: k.groups)
        let pass =
            switch k.direction {
            case .forward: "forward"
            case .backwardData: "input gradient"
            case .backwardWeights: "weight gradient"
            }
        ConvolutionKernelLog.note(pass, plan, name)
    }

    /// The shared flow of the two gradients: forced or chosen candidate, measuring at first use.
    private func gradient(_ k: ConvolutionSelector.Key, _ run: (ConvolutionCandidate) -> Tensor?) -> Tensor {
        var result: Tensor?
        var c = forced() ?? selector.choice(k)
        if c == nil {
            var results: [ConvolutionCandidate: Tensor] = [:]
            let (w, t, _) = measure { cand in
                guard let r = run(cand) else { return false }
                results[cand] = r
                return true
            }
            selector.setChoice(w, timings: t, for: k)
            c = w
            result = results[w]
        } else if let r = run(c!) {
            result = r
        } else {
            c = .cpu
            result = run(.cpu)
        }
        note(c!, k)
        return result!
    }

    func backwardData(inputShape: [Int], weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor {
        ConvolutionKernelLog.timed("input gradient", input: inputShape, weight: weight.shape, geometry: geometry, groups: groups) {
            selectBackwardData(inputShape: inputShape, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
        }
    }

    private func selectBackwardData(inputShape: [Int], weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor {
        gradient(key(.backwardData, inputShape, weight.shape, geometry, groups, false)) { c in
            c == .cpu
                ? cpu.backwardData(inputShape: inputShape, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
                : onednn.tryBackwardData(inputShape: inputShape, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
        }
    }

    func backwardWeights(input: Tensor, weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor {
        ConvolutionKernelLog.timed("weight gradient", input: input.shape, weight: weight.shape, geometry: geometry, groups: groups) {
            selectBackwardWeights(input: input, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
        }
    }

    private func selectBackwardWeights(input: Tensor, weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor {
        gradient(key(.backwardWeights, input, weight, geometry, groups, false)) { c in
            c == .cpu
                ? cpu.backwardWeights(input: input, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
                : onednn.tryBackwardWeights(input: input, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
        }
    }

    func backwardBias(gradOut: Tensor) -> Tensor { cpu.backwardBias(gradOut: gradOut) }
}
