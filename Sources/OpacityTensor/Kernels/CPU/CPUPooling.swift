// The CPU pooling kernels: one task per (image, channel) plane, so every output and every
// input-gradient cell is computed by one thread in a fixed order. `Tensor.maxPool2d` and
// `Tensor.avgPool2d` (Ops+Pool.swift) reach them only through ``PoolingKernels``.

/// The CPU provider of ``PoolingKernels``.
struct CPUPoolingKernels: PoolingKernels {
    func maxForward(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, indices: UnsafeMutablePointer<Int32>?,
        geometry: Pool2DGeometry
    ) {
        let (h, w, ho, wo) = (geometry.h, geometry.w, geometry.ho, geometry.wo)
        let (kernel, s, padding) = (geometry.kernel, geometry.stride, geometry.padding)
        let xp = input, op = output, ip = indices
        Compute.parallelFor(geometry.planes, minPerThread: 4) { plane in
            let src = xp + plane * h * w
            let dst = op + plane * ho * wo
            for oy in 0..<ho {
                let y0 = oy * s.0 - padding.0
                let ylo = max(0, y0), yhi = min(h, y0 + kernel.0)
                for ox in 0..<wo {
                    let x0 = ox * s.1 - padding.1
                    let xlo = max(0, x0), xhi = min(w, x0 + kernel.1)
                    var best = -Float.infinity, bi = -1
                    var y = ylo
                    while y < yhi {
                        var x = xlo
                        while x < xhi {
                            let v = src[y * w + x]
                            if v > best || bi < 0 || v.isNaN {
                                best = v
                                bi = y * w + x
                            }
                            x += 1
                        }
                        y += 1
                    }
                    dst[oy * wo + ox] = best
                    if let ip { ip[plane * ho * wo + oy * wo + ox] = Int32(bi) }
                }
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
        let (h, w, ho, wo) = (geometry.h, geometry.w, geometry.ho, geometry.wo)
        let (kernel, s, padding) = (geometry.kernel, geometry.stride, geometry.padding)
        let xp = input, op = output, dvp = divisors
        Compute.parallelFor(geometry.planes, minPerThread: 4) { plane in
            let src = xp + plane * h * w
            let dst = op + plane * ho * wo
            for oy in 0..<ho {
                let y0 = oy * s.0 - padding.0
                let ylo = max(0, y0), yhi = min(h, y0 + kernel.0)
                for ox in 0..<wo {
                    let x0 = ox * s.1 - padding.1
                    let xlo = max(0, x0), xhi = min(w, x0 + kernel.1)
                    var acc: Float = 0
                    for y in ylo..<max(ylo, yhi) { for x in xlo..<max(xlo, xhi) { acc += src[y * w + x] } }
                    dst[oy * wo + ox] = acc * dvp[oy * wo + ox]
                }
            }
        }
    }

    func averageBackward(
        gradOut: UnsafePointer<Float>, divisors: UnsafePointer<Float>, gradInput: UnsafeMutablePointer<Float>,
        geometry: Pool2DGeometry
    ) {
        let (h, w, ho, wo) = (geometry.h, geometry.w, geometry.ho, geometry.wo)
        let (kernel, s, padding) = (geometry.kernel, geometry.stride, geometry.padding)
        let gp = gradOut, dp = gradInput, dvp = divisors
        Compute.parallelFor(geometry.planes, minPerThread: 4) { plane in
            let d = dp + plane * h * w
            let gsrc = gp + plane * ho * wo
            for oy in 0..<ho {
                let y0 = oy * s.0 - padding.0
                let ylo = max(0, y0), yhi = min(h, y0 + kernel.0)
                for ox in 0..<wo {
                    let x0 = ox * s.1 - padding.1
                    let xlo = max(0, x0), xhi = min(w, x0 + kernel.1)
                    let v = gsrc[oy * wo + ox] * dvp[oy * wo + ox]
                    for y in ylo..<max(ylo, yhi) { for x in xlo..<max(xlo, xhi) { d[y * w + x] += v } }
                }
            }
        }
    }
}
