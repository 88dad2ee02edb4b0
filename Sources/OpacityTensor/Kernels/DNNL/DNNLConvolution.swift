import CDNNL
import Foundation

// oneDNN 2.6 (Debian's libdnnl, the library PyTorch runs on the CPU) as a provider of
// ``ConvolutionKernels``: forward with bias, the input gradient and the weight gradient of
// NCHW fp32 convolutions of any stride, padding, dilation and groups.
//
// oneDNN builds a primitive per shape (JIT code generation, about a millisecond), so the
// primitives are cached per shape, direction and slice for the life of the process. oneDNN
// chooses its own layouts (nChw16c on AVX-512 for its direct JIT kernels); inputs are
// reordered into them and results back on every call, and that cost is part of what the
// per-shape choice (``SelectingConvolutionKernels``) measures. The weights' reorder (forward
// pass without a graph by default; see ``ConvolutionKernelChoice/oneDNNWeightCache``) is
// cached on the weight's storage per weight version, as the Winograd weight transforms are (``TensorStorage/derived(_:count:compute:)``: from the second
// use at one version on; an in-place change of the weights makes it stale), keyed by the
// slice and oneDNN's layout so that the pyramid levels sharing a head's weights share it.
// (On our NCHW tensors as they
// are, with the strided views of the slices below, oneDNN 2.6 falls back to its reference
// kernels: 45 ms for a 1x1 64->64 convolution at 16x16, so that variant is not offered.)
//
// Threads: Debian builds oneDNN with the OpenMP runtime. Its team's threads spin in barriers,
// and on a shared machine a descheduled spinner costs a whole time slice (measured on the
// 2-core development machine at load 10: a 3x3 256->256 convolution at 16x16 took 80 ms on 2
// OpenMP threads against 1.3 ms on one). So oneDNN runs single-threaded on our own compute
// threads (``Compute``): each call is cut into ``Compute/threads`` slices along the channels
// the direction writes (output channels for the forward pass and the weight gradient, input
// channels for the input gradient, whole groups for grouped convolutions), one primitive
// per slice on strided views of our tensors, so the slices need no reduction.

/// oneDNN's CPU engine and the cache of primitives, created on first use.
final class DNNLRuntime: @unchecked Sendable {
    let engine: dnnl_engine_t
    /// Guards the cache (not the primitives: each has its own lock).
    private let lock = NSLock()
    private var primitives: [DNNLConvKey: DNNLConvPrimitive] = [:]
    private var failed: Set<DNNLConvKey> = []

    /// The runtime, or nil when oneDNN cannot create a CPU engine.
    static let shared: DNNLRuntime? = DNNLRuntime()

    private init?() {
        var e: dnnl_engine_t?
        guard dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success, let e else { return nil }
        engine = e
    }

    /// The cached primitive for `key`, built on first use; nil when oneDNN cannot build one.
    func primitive(_ key: DNNLConvKey) -> DNNLConvPrimitive? {
        lock.lock()
        defer { lock.unlock() }
        if failed.contains(key) { return nil }
        if let cached = primitives[key] { return cached }
        guard let made = DNNLConvPrimitive(key: key, engine: engine) else {
            failed.insert(key)
            return nil
        }
        primitives[key] = made
        return made
    }

    /// oneDNN's implementation name for `key` (`jit:avx512_core`, `gemm:jit`, ...), or nil.
    func implementation(_ key: DNNLConvKey) -> String? {
        lock.lock()
        defer { lock.unlock() }
        return primitives[key]?.implementation
    }
}

/// One convolution slice and direction: the key of a cached primitive.
struct DNNLConvKey: Hashable, Sendable {
    enum Direction: Hashable, Sendable { case forward, backwardData, backwardWeights }
    var direction: Direction
    /// `[N, Cin, H, W]` of the whole convolution.
    var input: [Int]
    /// `[Cout, Cin/groups, kh, kw]` of the whole convolution.
    var weight: [Int]
    var stride: [Int], padding: [Int], dilation: [Int]
    var groups: Int
    var bias: Bool
    /// The slice `[lo, hi)` of the units this primitive computes: groups when `groups > 1`,
    /// else output channels (forward, weight gradient) or input channels (input gradient).
    var slice: [Int]

    init(
        _ direction: Direction, input: [Int], weight: [Int], geometry g: Conv2DGeometry, groups: Int, bias: Bool,
        slice: Range<Int>
    ) {
        self.direction = direction
        self.input = input
        self.weight = weight
        stride = [g.stride.0, g.stride.1]
        padding = [g.padding.0, g.padding.1]
        dilation = [g.dilation.0, g.dilation.1]
        self.groups = groups
        self.bias = bias
        self.slice = [slice.lowerBound, slice.upperBound]
    }

    var geometry: Conv2DGeometry {
        Conv2DGeometry(
            kernel: (weight[2], weight[3]), stride: (stride[0], stride[1]), padding: (padding[0], padding[1]),
            dilation: (dilation[0], dilation[1]))
    }

    /// The number of units the slices cut (see ``slice``).
    static func units(_ d: Direction, input: [Int], weight: [Int], groups: Int) -> Int {
        groups > 1 ? groups : (d == .backwardData ? input[1] : weight[0])
    }
}

/// The element offsets and views of one slice inside our whole tensors.
struct DNNLSliceLayout {
    /// Views (dims, strides) of the input or its gradient, the weight or its gradient, the
    /// output or its gradient, and the bias.
    var src: ([Int], [Int]), weight: ([Int], [Int]), dst: ([Int], [Int]), bias: [Int]
    /// Offsets (in floats) of the slice's first element in each whole tensor.
    var srcOffset: Int, weightOffset: Int, dstOffset: Int, biasOffset: Int

    init(_ key: DNNLConvKey) {
        let (n, cin, h, w) = (key.input[0], key.input[1], key.input[2], key.input[3])
        let (cout, cinG, kh, kw) = (key.weight[0], key.weight[1], key.weight[2], key.weight[3])
        let (ho, wo) = key.geometry.output(h: h, w: w)
        let kk = kh * kw
        let (lo, hi) = (key.slice[0], key.slice[1])
        let count = hi - lo
        let srcStrides = [cin * h * w, h * w, w, 1], dstStrides = [cout * ho * wo, ho * wo, wo, 1]
        if key.groups > 1 {
            let coutG = cout / key.groups
            src = ([n, count * cinG, h, w], srcStrides)
            dst = ([n, count * coutG, ho, wo], dstStrides)
            weight = ([count, coutG, cinG, kh, kw], [coutG * cinG * kk, cinG * kk, kk, kw, 1])
            bias = [count * coutG]
            srcOffset = lo * cinG * h * w
            dstOffset = lo * coutG * ho * wo
            weightOffset = lo * coutG * cinG * kk
            biasOffset = lo * coutG
        } else if key.direction == .backwardData {
            src = ([n, count, h, w], srcStrides)
            dst = ([n, cout, ho, wo], dstStrides)
            weight = ([cout, count, kh, kw], [cin * kk, kk, kw, 1])
            bias = [cout]
            srcOffset = lo * h * w
            dstOffset = 0
            weightOffset = lo * kk
            biasOffset = 0
        } else {
            src = ([n, cin, h, w], srcStrides)
            dst = ([n, count, ho, wo], dstStrides)
            weight = ([count, cin, kh, kw], [cin * kk, kk, kw, 1])
            bias = [count]
            srcOffset = 0
            dstOffset = lo * ho * wo
            weightOffset = lo * cin * kk
            biasOffset = lo
        }
    }
}

/// A oneDNN convolution primitive (one slice) with its memory objects, reorders and stream.
final class DNNLConvPrimitive: @unchecked Sendable {
    /// One operand: the memory bound to our tensor, and, when the primitive wants another
    /// layout, its own buffer and the reorder between the two.
    private struct Operand {
        var arg: Int32
        var user: dnnl_memory_t
        var inner: dnnl_memory_t?
        var reorder: dnnl_primitive_t?
        var isOutput: Bool
    }

    /// Serialises executions (the memory objects and reorder buffers are shared).
    private let lock = NSLock()
    private var stream: dnnl_stream_t?
    private var primitive: dnnl_primitive_t?
    private var operands: [Operand] = []
    private var reorders: [dnnl_primitive_t] = []
    private var descriptors: [dnnl_primitive_desc_t] = []
    /// User-managed scratchpads (see `build`), one per primitive that needs one.
    private var scratchpads: [OpaquePointer: dnnl_memory_t] = [:]
    private var attr: dnnl_primitive_attr_t?
    /// Bytes of the reorder buffers and scratchpads, lent per call from the storage pool (kept
    /// per primitive they doubled the training peak: 997 -> 1662 MiB for a resnet34 RetinaNet).
    private var bufferBytes: [OpaquePointer: Int] = [:]
    /// The slice's views and offsets.
    let layout: DNNLSliceLayout
    /// The key of the weight operand's reordered copy on the weight's storage (see
    /// ``ConvolutionKernelChoice/oneDNNWeightCache``): the slice's view of the weights and oneDNN's
    /// blocked layout; nil when the weights need no reorder, are an output, or the layout is
    /// not a plain blocked one.
    private(set) var weightCacheKey: String?
    /// oneDNN's implementation name.
    private(set) var implementation = "?"

    init?(key: DNNLConvKey, engine: dnnl_engine_t) {
        layout = DNNLSliceLayout(key)
        guard build(key, engine) else {
            release()
            return nil
        }
    }

    deinit { release() }

    private func release() {
        for r in reorders { dnnl_primitive_destroy(r) }
        for o in operands {
            dnnl_memory_destroy(o.user)
            if let i = o.inner { dnnl_memory_destroy(i) }
        }
        if let primitive { dnnl_primitive_destroy(primitive) }
        for d in descriptors { dnnl_primitive_desc_destroy(d) }
        for m in scratchpads.values { dnnl_memory_destroy(m) }
        if let attr { dnnl_primitive_attr_destroy(attr) }
        if let stream { dnnl_stream_destroy(stream) }
        scratchpads = [:]
        attr = nil
        reorders = []
        operands = []
        descriptors = []
        primitive = nil
        stream = nil
    }

    /// A plain (strided) descriptor, or one whose layout oneDNN chooses.
    private static func md(_ view: ([Int], [Int]), any: Bool) -> dnnl_memory_desc_t? {
        var d = dnnl_memory_desc_t()
        let dims = view.0.map { Int64($0) }
        let status =
            any
            ? dnnl_memory_desc_init_by_tag(&d, Int32(dims.count), dims, dnnl_f32, dnnl_format_tag_any)
            : dnnl_memory_desc_init_by_strides(&d, Int32(dims.count), dims, dnnl_f32, view.1.map { Int64($0) })
        return status == dnnl_success ? d : nil
    }

    private func build(_ key: DNNLConvKey, _ engine: dnnl_engine_t) -> Bool {
        var s: dnnl_stream_t?
        guard dnnl_stream_create(&s, engine, dnnl_stream_default_flags.rawValue) == dnnl_success, let s else { return false }
        stream = s
        // oneDNN 2.6's own ("library") scratchpad is a per-thread buffer tied to the thread
        // that created the primitive; our slices run on whichever compute thread is free, so
        // each primitive gets its own scratchpad instead (user mode).
        var a: dnnl_primitive_attr_t?
        guard dnnl_primitive_attr_create(&a) == dnnl_success, let a else { return false }
        attr = a
        guard dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user) == dnnl_success else { return false }
        let g = key.geometry
        let v = layout
        guard let srcUser = Self.md(v.src, any: false), let dstUser = Self.md(v.dst, any: false),
            let weightUser = Self.md(v.weight, any: false), let biasUser = Self.md((v.bias, [1]), any: false),
            var src = Self.md(v.src, any: true), var dst = Self.md(v.dst, any: true),
            var wei = Self.md(v.weight, any: true)
        else { return false }
        var bias = biasUser
        let strides: [Int64] = [Int64(g.stride.0), Int64(g.stride.1)]
        // oneDNN counts dilation from 0 (no gaps). Symmetric padding: its output-size check
        // rounds down like ours.
        let dilates: [Int64] = [Int64(g.dilation.0 - 1), Int64(g.dilation.1 - 1)]
        let pad: [Int64] = [Int64(g.padding.0), Int64(g.padding.1)]

        // The forward descriptor (also the hint of the backward ones).
        var fwd = dnnl_convolution_desc_t()
        let prop = key.direction == .forward ? dnnl_forward_inference : dnnl_forward_training
        let withBias = key.bias && key.direction == .forward
        let fwdStatus = withUnsafePointer(to: &bias) { bp in
            dnnl_dilated_convolution_forward_desc_init(
                &fwd, prop, dnnl_convolution_direct, &src, &wei, withBias ? bp : nil, &dst, strides, dilates, pad, pad)
        }
        guard fwdStatus == dnnl_success else { return false }
        var fwdPD: dnnl_primitive_desc_t?
        guard dnnl_primitive_desc_create(&fwdPD, &fwd, a, engine, nil) == dnnl_success, let fwdPD else { return false }
        descriptors.append(fwdPD)

        var pd = fwdPD
        // (query, arg, user descriptor, output), in the order of `execute`'s pointers.
        var plan: [(dnnl_query_t, Int32, dnnl_memory_desc_t, Bool)]
        var bwd = dnnl_convolution_desc_t()
        switch key.direction {
        case .forward:
            plan = [
                (dnnl_query_src_md, Int32(DNNL_ARG_SRC), srcUser, false),
                (dnnl_query_weights_md, Int32(DNNL_ARG_WEIGHTS), weightUser, false),
                (dnnl_query_dst_md, Int32(DNNL_ARG_DST), dstUser, true),
            ]
            if withBias { plan.append((dnnl_query_undef, Int32(DNNL_ARG_BIAS), biasUser, false)) }
        case .backwardData:
            guard
                dnnl_dilated_convolution_backward_data_desc_init(
                    &bwd, dnnl_convolution_direct, &src, &wei, &dst, strides, dilates, pad, pad) == dnnl_success
            else { return false }
            plan = [
                (dnnl_query_diff_dst_md, Int32(DNNL_ARG_DIFF_DST), dstUser, false),
                (dnnl_query_weights_md, Int32(DNNL_ARG_WEIGHTS), weightUser, false),
                (dnnl_query_diff_src_md, Int32(DNNL_ARG_DIFF_SRC), srcUser, true),
            ]
        case .backwardWeights:
            guard
                dnnl_dilated_convolution_backward_weights_desc_init(
                    &bwd, dnnl_convolution_direct, &src, &wei, nil, &dst, strides, dilates, pad, pad) == dnnl_success
            else { return false }
            plan = [
                (dnnl_query_src_md, Int32(DNNL_ARG_SRC), srcUser, false),
                (dnnl_query_diff_dst_md, Int32(DNNL_ARG_DIFF_DST), dstUser, false),
                (dnnl_query_diff_weights_md, Int32(DNNL_ARG_DIFF_WEIGHTS), weightUser, true),
            ]
        }
        if key.direction != .forward {
            var p: dnnl_primitive_desc_t?
            guard dnnl_primitive_desc_create(&p, &bwd, a, engine, fwdPD) == dnnl_success, let p else { return false }
            descriptors.append(p)
            pd = p
        }
        var info: UnsafePointer<CChar>?
        if dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) == dnnl_success, let info {
            implementation = String(cString: info)
        }
        var prim: dnnl_primitive_t?
        guard dnnl_primitive_create(&prim, pd) == dnnl_success, let prim else { return false }
        primitive = prim
        guard addScratchpad(prim, pd, engine) else { return false }

        for (query, arg, userMD, isOutput) in plan {
            var u = userMD
            var user: dnnl_memory_t?
            guard dnnl_memory_create(&user, &u, engine, nil) == dnnl_success, let user else { return false }
            operands.append(Operand(arg: arg, user: user, inner: nil, reorder: nil, isOutput: isOutput))
            // The bias is always plain.
            guard query != dnnl_query_undef else { continue }
            guard let wanted = dnnl_primitive_desc_query_md(pd, query, 0) else { return false }
            if dnnl_memory_desc_equal(wanted, &u) != 0 { continue }
            var inner: dnnl_memory_t?
            // No buffer of its own: `execute` lends one from the engine's storage pool.
            guard dnnl_memory_create(&inner, wanted, engine, nil) == dnnl_success, let inner else { return false }
            bufferBytes[inner] = dnnl_memory_desc_get_size(wanted)
            operands[operands.count - 1].inner = inner
            if arg == Int32(DNNL_ARG_WEIGHTS) && !isOutput {
                weightCacheKey = Self.layoutKey(wanted.pointee, view: v.weight, offset: v.weightOffset)
            }
            var rpd: dnnl_primitive_desc_t?
            let made =
                isOutput
                ? dnnl_reorder_primitive_desc_create(&rpd, wanted, engine, &u, engine, a)
                : dnnl_reorder_primitive_desc_create(&rpd, &u, engine, wanted, engine, a)
            guard made == dnnl_success, let rpd else { return false }
            descriptors.append(rpd)
            var r: dnnl_primitive_t?
            guard dnnl_primitive_create(&r, rpd) == dnnl_success, let r else { return false }
            reorders.append(r)
            guard addScratchpad(r, rpd, engine) else { return false }
            operands[operands.count - 1].reorder = r
        }
        return true
    }

    /// A key naming the reorder of our plain view `view` at `offset` into oneDNN's layout
    /// `md`: the same for every primitive that reorders the same weights the same way. Nil
    /// unless `md` is a plain blocked fp32 layout without extra flags.
    private static func layoutKey(_ md: dnnl_memory_desc_t, view: ([Int], [Int]), offset: Int) -> String? {
        guard md.format_kind == dnnl_blocked, md.data_type == dnnl_f32, md.extra.flags == 0, md.offset0 == 0 else { return nil }
        let n = Int(md.ndims)
        func list<T>(_ tuple: T, _ count: Int) -> [Int64] {
            withUnsafeBytes(of: tuple) { Array($0.bindMemory(to: Int64.self).prefix(count)) }
        }
        let b = md.format_desc.blocking
        let nb = Int(b.inner_nblks)
        return "dnnl-weights @\(offset) \(view.0)/\(view.1) -> \(list(md.dims, n)) padded \(list(md.padded_dims, n)) "
            + "strides \(list(b.strides, n)) blocks \(list(b.inner_blks, nb)) of \(list(b.inner_idxs, nb))"
    }

    /// Allocates the scratchpad `p` (made from `pd`) asks for, if any.
    private func addScratchpad(_ p: dnnl_primitive_t, _ pd: dnnl_primitive_desc_t, _ engine: dnnl_engine_t) -> Bool {
        guard let md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0), dnnl_memory_desc_get_size(md) > 0 else {
            return true
        }
        var m: dnnl_memory_t?
        guard dnnl_memory_create(&m, md, engine, nil) == dnnl_success, let m else { return false }
        scratchpads[p] = m
        bufferBytes[m] = dnnl_memory_desc_get_size(md)
        return true
    }

    /// Runs the slice on `pointers` (the starts of the whole tensors), one per operand in the
    /// order of the direction: forward (input, weight, output[, bias]); backward data (output
    /// gradient, weight, input gradient); backward weights (input, output gradient, weight
    /// gradient). oneDNN runs single-threaded on the calling thread. With `weights` (the
    /// storage whose start is the weight pointer; given when the reorder is to be cached, see
    /// ``ConvolutionKernelChoice/oneDNNWeightCache``), the reordered weights come from its
    /// cache (``TensorStorage/derived(_:count:compute:)``). False when oneDNN reports an error.
    func execute(_ pointers: [UnsafeMutableRawPointer], weights: TensorStorage? = nil) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let primitive, let stream, pointers.count == operands.count else { return false }
        _ = opacity_dnnl_set_omp_threads(1)
        let cached = weights != nil ? weightCacheKey : nil
        let weightIndex = operands.firstIndex { $0.arg == Int32(DNNL_ARG_WEIGHTS) && !$0.isOutput }
        let weightInner = cached != nil ? weightIndex.flatMap { operands[$0].inner } : nil
        var lent: [Tensor] = []
        for (m, bytes) in bufferBytes where m != weightInner {
            let t = Tensor(uninitializedShape: [max(1, (bytes + 3) / 4)])
            lent.append(t)
            guard dnnl_memory_set_data_handle(m, UnsafeMutableRawPointer(t.mutablePointer)) == dnnl_success else { return false }
        }
        defer { withExtendedLifetime(lent) {} }
        let v = layout
        var args: [dnnl_exec_arg_t] = []
        for (o, p) in zip(operands, pointers) {
            let offset: Int
            switch o.arg {
            case Int32(DNNL_ARG_SRC), Int32(DNNL_ARG_DIFF_SRC): offset = v.srcOffset
            case Int32(DNNL_ARG_DST), Int32(DNNL_ARG_DIFF_DST): offset = v.dstOffset
            case Int32(DNNL_ARG_BIAS): offset = v.biasOffset
            default: offset = v.weightOffset
            }
            guard dnnl_memory_set_data_handle(o.user, p + 4 * offset) == dnnl_success else { return false }
            args.append(dnnl_exec_arg_t(arg: o.arg, memory: o.inner ?? o.user))
        }
        // The reordered weights: from the weight's cache, reordering only when it misses.
        var reordered: TensorStorage?
        if let cached, let weights, let weightIndex, let inner = weightInner, let r = operands[weightIndex].reorder,
            let bytes = bufferBytes[inner]
        {
            let user = operands[weightIndex].user
            var ok = true
            reordered = weights.derived(cached, count: max(1, (bytes + 3) / 4)) { buffer in
                ok =
                    dnnl_memory_set_data_handle(inner, UnsafeMutableRawPointer(buffer)) == dnnl_success
                    && run(r, [.init(arg: Int32(DNNL_ARG_FROM), memory: user), .init(arg: Int32(DNNL_ARG_TO), memory: inner)], stream)
                    && dnnl_stream_wait(stream) == dnnl_success
            }
            guard ok else {
                // Never trust this key again: a failed reorder may have been kept.
                weightCacheKey = nil
                return false
            }
            guard dnnl_memory_set_data_handle(inner, UnsafeMutableRawPointer(reordered!.base)) == dnnl_success else { return false }
        }
        defer { withExtendedLifetime(reordered) {} }
        for o in operands where !o.isOutput {
            guard o.inner != weightInner || weightInner == nil else { continue }
            guard let r = o.reorder, let inner = o.inner else { continue }
            guard run(r, [.init(arg: Int32(DNNL_ARG_FROM), memory: o.user), .init(arg: Int32(DNNL_ARG_TO), memory: inner)], stream)
            else { return false }
        }
        guard run(primitive, args, stream) else { return false }
        for o in operands where o.isOutput {
            guard let r = o.reorder, let inner = o.inner else { continue }
            guard run(r, [.init(arg: Int32(DNNL_ARG_FROM), memory: inner), .init(arg: Int32(DNNL_ARG_TO), memory: o.user)], stream)
            else { return false }
        }
        return dnnl_stream_wait(stream) == dnnl_success
    }

    private func run(_ p: dnnl_primitive_t, _ args: [dnnl_exec_arg_t], _ stream: dnnl_stream_t) -> Bool {
        var args = args
        if let m = scratchpads[p] { args.append(.init(arg: Int32(DNNL_ARG_SCRATCHPAD), memory: m)) }
        return args.withUnsafeBufferPointer { a in dnnl_primitive_execute(p, stream, Int32(a.count), a.baseAddress) == dnnl_success }
    }
}

/// The oneDNN provider of ``ConvolutionKernels``. A shape oneDNN cannot build a primitive
/// for (or an error at run time) goes to the CPU kernels instead.
struct DNNLConvolutionKernels: ConvolutionKernels {
    private let fallback = CPUConvolutionKernels()

    /// Whether oneDNN's CPU engine could be created in this process.
    static var isAvailable: Bool { DNNLRuntime.shared != nil }

    /// The slices of a call: ``Compute/threads`` contiguous ranges of the units, cut at
    /// multiples of 16 channels where there are enough (oneDNN's block on AVX-512).
    static func slices(units: Int, groups: Int, threads: Int = Compute.threads) -> [Range<Int>] {
        let t = max(1, min(threads, units))
        let quantum = groups == 1 && units >= 16 * t ? 16 : 1
        let blocks = (units + quantum - 1) / quantum
        let parts = min(t, blocks)
        return (0..<parts).map { p in min(units, blocks * p / parts * quantum)..<min(units, blocks * (p + 1) / parts * quantum) }
    }

    /// Runs every slice of `direction` on the compute threads; false when any cannot run.
    private func run(
        _ d: DNNLConvKey.Direction, input: [Int], weight: [Int], geometry g: Conv2DGeometry, groups: Int, bias: Bool,
        _ pointers: [UnsafeMutableRawPointer], weights: TensorStorage? = nil
    ) -> Bool {
        guard let rt = DNNLRuntime.shared else { return false }
        let slices = Self.slices(units: DNNLConvKey.units(d, input: input, weight: weight, groups: groups), groups: groups)
        var prims: [DNNLConvPrimitive] = []
        for s in slices {
            let key = DNNLConvKey(d, input: input, weight: weight, geometry: g, groups: groups, bias: bias, slice: s)
            guard let p = rt.primitive(key) else { return false }
            prims.append(p)
        }
        let ok = UnsafeMutablePointer<Bool>.allocate(capacity: prims.count)
        defer { ok.deallocate() }
        ok.initialize(repeating: false, count: prims.count)
        let box = UnsafeSendableBox((prims, pointers, ok, weights))
        Compute.parallelFor(prims.count) { i in
            let (prims, pointers, ok, weights) = box.value
            ok[i] = prims[i].execute(pointers, weights: weights)
        }
        return (0..<prims.count).allSatisfy { ok[$0] }
    }

    /// Whether this call's weight reorder is cached (``ConvolutionKernelChoice/oneDNNWeightCache``).
    private static func cachesWeights(forward: Bool) -> Bool {
        switch ConvolutionKernelChoice.oneDNNWeightCache {
        case .off: false
        case .inference: forward && Autograd.isInference
        case .always: true
        }
    }

    private static func raw(_ t: Tensor) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(mutating: t.pointer) }

    /// The forward convolution through oneDNN; false when oneDNN cannot run this shape
    /// (`out` may then be partly written).
    func tryForward(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int, into out: Tensor) -> Bool {
        var ptrs = [Self.raw(input), Self.raw(weight), UnsafeMutableRawPointer(out.mutablePointer)]
        if let bias { ptrs.append(Self.raw(bias)) }
        return run(
            .forward, input: input.shape, weight: weight.shape, geometry: geometry, groups: groups, bias: bias != nil, ptrs,
            weights: Self.cachesWeights(forward: true) ? weight.storage : nil)
    }

    /// The input gradient through oneDNN, or nil when oneDNN cannot run this shape.
    func tryBackwardData(inputShape: [Int], weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor? {
        let gx = Tensor(uninitializedShape: inputShape)
        let ptrs = [Self.raw(gradOut), Self.raw(weight), UnsafeMutableRawPointer(gx.mutablePointer)]
        let ran = run(
            .backwardData, input: inputShape, weight: weight.shape, geometry: geometry, groups: groups, bias: false, ptrs,
            weights: Self.cachesWeights(forward: false) ? weight.storage : nil)
        return ran ? gx : nil
    }

    /// The weight gradient through oneDNN, or nil when oneDNN cannot run this shape.
    func tryBackwardWeights(input: Tensor, weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor? {
        let gw = Tensor(uninitializedShape: weight.shape)
        let ptrs = [Self.raw(input), Self.raw(gradOut), UnsafeMutableRawPointer(gw.mutablePointer)]
        return run(.backwardWeights, input: input.shape, weight: weight.shape, geometry: geometry, groups: groups, bias: false, ptrs)
            ? gw : nil
    }

    /// oneDNN's implementation name for the first slice of this convolution and direction,
    /// once it has run.
    func implementation(
        _ d: DNNLConvKey.Direction, input: [Int], weight: [Int], geometry: Conv2DGeometry, groups: Int, bias: Bool
    ) -> String? {
        let s = Self.slices(units: DNNLConvKey.units(d, input: input, weight: weight, groups: groups), groups: groups)
        guard let first = s.first else { return nil }
        return DNNLRuntime.shared?.implementation(
            DNNLConvKey(d, input: input, weight: weight, geometry: geometry, groups: groups, bias: bias, slice: first))
    }

    func forward(input: Tensor, weight: Tensor, bias: Tensor?, geometry: Conv2DGeometry, groups: Int, into out: Tensor) {
        if !tryForward(input: input, weight: weight, bias: bias, geometry: geometry, groups: groups, into: out) {
            fallback.forward(input: input, weight: weight, bias: bias, geometry: geometry, groups: groups, into: out)
        }
    }

    func backwardData(inputShape: [Int], weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor {
        tryBackwardData(inputShape: inputShape, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
            ?? fallback.backwardData(inputShape: inputShape, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
    }

    func backwardWeights(input: Tensor, weight: Tensor, gradOut: Tensor, geometry: Conv2DGeometry, groups: Int) -> Tensor {
        tryBackwardWeights(input: input, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
            ?? fallback.backwardWeights(input: input, weight: weight, gradOut: gradOut, geometry: geometry, groups: groups)
    }

    func backwardBias(gradOut: Tensor) -> Tensor { fallback.backwardBias(gradOut: gradOut) }
}
