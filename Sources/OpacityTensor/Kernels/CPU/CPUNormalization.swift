// The CPU batch-norm kernels: one task per (image, channel) plane, SIMD8 sums. Per-plane
// partial sums are added over images in a fixed order, so results do not depend on the
// thread count. `Tensor.batchNorm2d` and `Tensor.batchNorm2dTraining` (Ops+Norm.swift)
// reach them only through ``NormalizationKernels``.

/// The CPU provider of ``NormalizationKernels``.
struct CPUNormalizationKernels: NormalizationKernels {
    func inferenceForward(
        input: UnsafePointer<Float>, coefficients: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
        n: Int, c: Int, hw: Int, relu: Bool
    ) {
        let xp = input, op = output, cpc = coefficients
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            let a = cpc[i % c], b = cpc[c + i % c]
            let src = xp + i * hw, dst = op + i * hw
            if relu {
                for j in 0..<hw { dst[j] = max(src[j] * a + b, 0) }
            } else {
                for j in 0..<hw { dst[j] = src[j] * a + b }
            }
        }
    }

    func inferenceBackward(
        gradOut: UnsafePointer<Float>, input: UnsafePointer<Float>,
        coefficients: UnsafePointer<Float>, gradInput: UnsafeMutablePointer<Float>?,
        gradWeight: UnsafeMutablePointer<Float>?, gradBias: UnsafeMutablePointer<Float>?,
        scratch: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int, relu: Bool
    ) {
        // One pass per (image, channel) plane: the input gradient, and per-plane sums of
        // g and g * (x - mean) for the affine gradients (added over images in order).
        // The ReLU's mask is `x * a + b <= 0`, the forward's product and sum (no fused
        // multiply-add in either), so it is exactly where the forward's output was 0.
        let gp = gradOut, xp = input, cpc = coefficients
        let dp = gradInput, sp = scratch
        Compute.parallelFor(n * c, minPerThread: 8) { i in
            let ch = i % c
            let a = cpc[ch], b = cpc[c + ch], m = cpc[3 * c + ch]
            let gi = gp + i * hw, xi = xp + i * hw
            let di = dp.map { $0 + i * hw }
            var accG = SIMD8<Float>(repeating: 0), accGX = SIMD8<Float>(repeating: 0)
            var j = 0
            while j + 8 <= hw {
                var gv = load8(gi, j)
                let xv = load8(xi, j)
                if relu { gv.replace(with: 0, where: xv * a + b .<= 0) }
                if let di { store8(di, j, gv * a) }
                accG += gv
                accGX += gv * (xv - m)
                j += 8
            }
            var sg = accG.sum(), sgx = accGX.sum()
            while j < hw {
                let gv = relu && xi[j] * a + b <= 0 ? 0 : gi[j]
                di?[j] = gv * a
                sg += gv
                sgx += gv * (xi[j] - m)
                j += 1
            }
            sp[i] = sg
            sp[n * c + i] = sgx
        }
        if let wp = gradWeight, let bp = gradBias {
            for ch in 0..<c {
                var s: Float = 0, sx: Float = 0
                for b in 0..<n {
                    s += sp[b * c + ch]
                    sx += sp[n * c + b * c + ch]
                }
                bp[ch] = s
                wp[ch] = sx * cpc[2 * c + ch]
            }
        }
    }

    func planeSums(
        input: UnsafePointer<Float>, sums: UnsafeMutablePointer<Float>, remainders: UnsafeMutablePointer<Float>,
        n: Int, c: Int, hw: Int
    ) {
        let xp = input, psp = sums, pmp = remainders
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            let s = simdSumDouble(xp + i * hw, hw)
            psp[i] = Float(s)
            pmp[i] = Float(s - Double(Float(s)))
        }
    }

    func planeSquaredDeviations(
        input: UnsafePointer<Float>, mean: UnsafePointer<Float>, deviations: UnsafeMutablePointer<Float>,
        n: Int, c: Int, hw: Int
    ) {
        let xp = input, stp = mean, psp = deviations
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            let mu = stp[i % c]
            let src = xp + i * hw
            var acc = SIMD8<Float>(repeating: 0)
            var j = 0
            while j + 8 <= hw {
                let d = load8(src, j) - mu
                acc += d * d
                j += 8
            }
            var v = acc.sum()
            while j < hw {
                let d = src[j] - mu
                v += d * d
                j += 1
            }
            psp[i] = v
        }
    }

    func trainingNormalize(
        input: UnsafePointer<Float>, mean: UnsafePointer<Float>, coefficients: UnsafePointer<Float>,
        normalized: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int, relu: Bool
    ) {
        let xp = input, stp = mean, cpc = coefficients, hp = normalized, op = output
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            let ch = i % c
            let mu = stp[ch], istd = cpc[ch], a = cpc[c + ch], b = cpc[2 * c + ch]
            let src = xp + i * hw, h = hp + i * hw, o = op + i * hw
            if relu {
                for j in 0..<hw {
                    let v = (src[j] - mu) * istd
                    h[j] = v
                    let y = v * a + b
                    o[j] = y < 0 ? 0 : y
                }
            } else {
                for j in 0..<hw {
                    let v = (src[j] - mu) * istd
                    h[j] = v
                    o[j] = v * a + b
                }
            }
        }
    }

    func trainingNormalized(
        input: UnsafePointer<Float>, mean: UnsafePointer<Float>, coefficients: UnsafePointer<Float>,
        normalized: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int
    ) {
        // `(x - mean) * istd`, as `trainingNormalize` computes it: elementwise, so the same bits.
        let xp = input, stp = mean, cpc = coefficients, hp = normalized
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            let ch = i % c
            let mu = stp[ch], istd = cpc[ch]
            let src = xp + i * hw, h = hp + i * hw
            for j in 0..<hw { h[j] = (src[j] - mu) * istd }
        }
    }

    func trainingOutput(
        normalized: UnsafePointer<Float>, coefficients: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
        n: Int, c: Int, hw: Int, relu: Bool
    ) {
        // `xhat * a + b` as `trainingNormalize` computes it (a product, then a sum; no fused
        // multiply-add), so the same bits.
        let hp = normalized, cpc = coefficients, op = output
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            let ch = i % c
            let a = cpc[c + ch], b = cpc[2 * c + ch]
            let h = hp + i * hw, o = op + i * hw
            var j = 0
            while j + 8 <= hw {
                var y = load8(h, j) * a + b
                if relu { y.replace(with: 0, where: y .< 0) }
                store8(o, j, y)
                j += 8
            }
            while j < hw {
                let y = h[j] * a + b
                o[j] = relu && y < 0 ? 0 : y
                j += 1
            }
        }
    }

    func trainingReluGradient(
        gradOut: UnsafePointer<Float>, normalized: UnsafePointer<Float>, coefficients: UnsafePointer<Float>,
        gradMasked: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int
    ) {
        let gp = gradOut, hp = normalized, cpc = coefficients, dp = gradMasked
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            let ch = i % c
            let a = cpc[c + ch], b = cpc[2 * c + ch]
            let g = gp + i * hw, h = hp + i * hw, d = dp + i * hw
            var j = 0
            while j + 8 <= hw {
                var v = load8(g, j)
                v.replace(with: 0, where: load8(h, j) * a + b .<= 0)
                store8(d, j, v)
                j += 8
            }
            while j < hw {
                d[j] = h[j] * a + b <= 0 ? 0 : g[j]
                j += 1
            }
        }
    }

    func trainingGradientSums(
        gradOut: UnsafePointer<Float>, normalized: UnsafePointer<Float>, sumG: UnsafeMutablePointer<Float>,
        sumGX: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int
    ) {
        let gp = gradOut, hp = normalized, sp = scratch, sg = sumG, sgx = sumGX
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            sp[i] = simdSum(gp + i * hw, hw)
            sp[n * c + i] = simdDot(gp + i * hw, hp + i * hw, hw)
        }
        for ch in 0..<c {
            var s: Float = 0, sx: Float = 0
            for b in 0..<n {
                s += sp[b * c + ch]
                sx += sp[n * c + b * c + ch]
            }
            sg[ch] = s
            sgx[ch] = sx
        }
    }

    func trainingInputGradient(
        gradOut: UnsafePointer<Float>, normalized: UnsafePointer<Float>, coefficients: UnsafePointer<Float>,
        sumG: UnsafePointer<Float>, sumGX: UnsafePointer<Float>, count m: Float,
        gradInput: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int
    ) {
        let gp = gradOut, hp = normalized, cpc = coefficients, gs = sumG, gsx = sumGX, dp = gradInput
        Compute.parallelFor(n * c, minPerThread: 16) { i in
            let ch = i % c
            let k = cpc[c + ch] * cpc[ch] / m
            let s = gs[ch], sx = gsx[ch]
            let gi = gp + i * hw, hi = hp + i * hw, di = dp + i * hw
            for j in 0..<hw { di[j] = k * (m * gi[j] - s - hi[j] * sx) }
        }
    }
}
