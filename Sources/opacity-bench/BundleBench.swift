import Foundation
import Opacity

extension BenchSection {
    static let bundle = BenchSection(
        name: "bundle", summary: "weight bundles: save/load MB/s and file size against raw fp32, per storage type (ResNet-34 RetinaNet)",
        runsByDefault: true
    ) { context in
        print("== bundle: save and load speed, compressed size against raw fp32")
        do {
            print(
                try BundleBenchmark.run(
                    registry: Registry.standard(), config: "retinanet(encoder=resnet34)",
                    repeats: max(1, context.options.repetitions)))
        } catch {
            print("  failed: \(error)")
        }
        print("")
    }
}
