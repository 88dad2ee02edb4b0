// Builds a RetinaNet on TinyBackbone from a config string and trains it for a few steps on
// synthetic images, through Opacity's public API only. Exits non-zero if anything is off.
//
//     swift run -c release --package-path Examples/TinyBackbone tiny-backbone-demo
import Foundation
import Opacity
import TinyBackbone

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("tiny-backbone-demo: \(message)\n".utf8))
    exit(1)
}

do {
    // 1. The registry: the built-in plugins plus ours.
    let registry = try Registry(plugins: builtinPlugins + [TinyBackbonePlugin.self])
    guard let info = registry.components.first(where: { $0.key == "encoder/tiny_backbone" }) else {
        fail("encoder/tiny_backbone is not registered")
    }
    print("registered \(info.key) from plugin \(info.plugin): \(info.parameters.map(\.name).joined(separator: ", "))")

    // 2. A detector from one config string; the registry checks encoder, neck and head fit.
    let config = "retinanet(encoder=tiny_backbone, size=64, neck=fpn(channels=16), head=retina(channels=16))"
    let detector = try Initializer.withSeed(1) { try registry.makeDetector(config) }
    print("built \(detector.config): \(detector.parameterCount) parameters, encoder maps \(detector.encoder.featureSpec)")

    // 3. The maps really sit where the spec says.
    let probe = Autograd.inference { detector.encoder.features(Tensor.zeros([1, 1, 64, 64])) }
    let expected = detector.encoder.featureSpec.levels.map { [$0.channels, 64 / $0.stride, 64 / $0.stride] }
    guard probe.map({ Array($0.shape[1...]) }) == expected else {
        fail("feature shapes \(probe.map(\.shape)) do not follow the spec \(detector.encoder.featureSpec)")
    }

    // 4. A few training steps on synthetic images: a bright square on a dark background.
    func sample(_ i: Int) -> (image: [Float], target: DetectionTarget) {
        let x0 = 8 + (i * 7) % 24, y0 = 10 + (i * 5) % 20, side = 20
        var pixels = [Float](repeating: 0.1, count: 64 * 64)
        for y in y0..<(y0 + side) { for x in x0..<(x0 + side) { pixels[y * 64 + x] = 0.9 } }
        let box = BoundingBox(x1: Float(x0), y1: Float(y0), x2: Float(x0 + side), y2: Float(y0 + side))
        return (pixels, DetectionTarget(boxes: [box], imageClass: .lungOpacity))
    }
    detector.train()
    detector.freezeBatchNorm()
    let optimizer = Adam(detector.namedParameters(), learningRate: 1e-3)
    var losses: [Float] = []
    for step in 0..<20 {
        let batch = (0..<2).map { sample(step * 2 + $0) }
        let images = Tensor(shape: [2, 1, 64, 64], scalars: batch.flatMap(\.image))
        optimizer.zeroGrad()
        let terms = Autograd.recordingGradients { detector.losses(images, targets: batch.map(\.target)) }
        terms.total.backward()
        optimizer.step()
        losses.append(terms.total.scalar)
        if step % 5 == 0 || step == 19 {
            print("step \(step): " + terms.terms.map { "\($0.name) \($0.value)" }.joined(separator: ", "))
        }
    }
    guard losses.allSatisfy(\.isFinite) else { fail("non-finite loss: \(losses)") }
    let first = losses.prefix(3).reduce(0, +) / 3, last = losses.suffix(3).reduce(0, +) / 3
    guard last < first else { fail("the loss did not fall: \(first) -> \(last)") }
    print("ok: mean loss of the first three steps \(first), of the last three \(last)")
} catch {
    fail("\(error)")
}
