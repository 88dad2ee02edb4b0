// The CPU pooling kernels: one task per (image, channel) plane, so every output and every
// input-gradient cell is computed by one thread in a fixed order. `Tensor.maxPool2d` and
// `Tensor.avgPool2d` (Ops+Pool.swift) reach them only through ``PoolingKernels``.

/// The CPU provider of ``PoolingKernels``.
struct CPUPoolingKernels: PoolingKernels {
    func maxForward(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, indices: UnsafeMutablePointer<Int32>?,
        geometry: Pool2DGeometry
    ) {
        let (h, w, cells) = (geometry.h, geometry.w, geometry.ho * geometry.wo)
        Compute.parallelFor(geometry.planes, minPerThread: 4) { plane in
            let src = input + plane * h * w
            let dst = output + plane * cells
            let ip = indices.map { $0 + plane * cells }
            forEachWindow(geometry) { cell, rows, columns in
                var best = -Float.infinity, bi = -1
                for y in rows {
                    for x in columns {
                        let v = src[y * w + x]
                        if v > best || bi < 0 || v.isNaN {
                            best = v
                            bi = y * w + x
                        }
                    }
                }
                dst[cell] = best
                if let ip { ip[cell] = Int32(bi) }
            }
        }
    }

    func maxBackward(
        gradOut: UnsafePointer<Float>, indices: UnsafePointer<Int32>, gradInput: UnsafeMutablePointer<Float>,
        geometry: Pool2DGeometry
    ) {
        let (h, w, ho, wo) = (geometry.h, geometry.w, geometry.ho, geometry.wo)
        let gp = gradOut, dp = gradInput, ip = indices
        Compute.parallelFor(geometry.planes, minPerThread: 4) { plane in
            let d = dp + plane * h * w
            let base = plane * ho * wo
            for i in 0..<(ho * wo) where ip[base + i] >= 0 { d[Int(ip[base + i])] += gp[base + i] }
        }
    }

    func averageForward(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, divisors: UnsafePointer<Float>,
        geometry: Pool2DGeometry
    ) {
        let (h, w, cells) = (geometry.h, geometry.w, geometry.ho * geometry.wo)
        Compute.parallelFor(geometry.planes, minPerThread: 4) { plane in
            let src = input + plane * h * w
            let dst = output + plane * cells
            forEachWindow(geometry) { cell, rows, columns in
                var acc: Float = 0
                for y in rows { for x in columns { acc += src[y * w + x] } }
                dst[cell] = acc * divisors[cell]
            }
        }
    }

    func averageBackward(
        gradOut: UnsafePointer<Float>, divisors: UnsafePointer<Float>, gradInput: UnsafeMutablePointer<Float>,
        geometry: Pool2DGeometry
    ) {
        let (h, w, cells) = (geometry.h, geometry.w, geometry.ho * geometry.wo)
        Compute.parallelFor(geometry.planes, minPerThread: 4) { plane in
            let d = gradInput + plane * h * w
            let gsrc = gradOut + plane * cells
            forEachWindow(geometry) { cell, rows, columns in
                let v = gsrc[cell] * divisors[cell]
                for y in rows { for x in columns { d[y * w + x] += v } }
            }
        }
    }

    /// Calls `body(cell, rows, columns)` for every output cell of one plane in row-major
    /// order: `cell` is the cell's index in the plane (`oy * wo + ox`), `rows` and `columns`
    /// the input rows and columns of its window that lie inside the plane (empty for a window
    /// wholly in the padding).
    @inline(__always)
    private func forEachWindow(_ geometry: Pool2DGeometry, _ body: (_ cell: Int, _ rows: Range<Int>, _ columns: Range<Int>) -> Void) {
        let (h, w, ho, wo) = (geometry.h, geometry.w, geometry.ho, geometry.wo)
        let (kernel, s, padding) = (geometry.kernel, geometry.stride, geometry.padding)
        for oy in 0..<ho {
            let y0 = oy * s.0 - padding.0
            let ylo = max(0, y0)
            let rows = ylo..<max(ylo, min(h, y0 + kernel.0))
            for ox in 0..<wo {
                let x0 = ox * s.1 - padding.1
                let xlo = max(0, x0)
                body(oy * wo + ox, rows, xlo..<max(xlo, min(w, x0 + kernel.1)))
            }
        }
    }
}
