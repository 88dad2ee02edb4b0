import Foundation
import Opacity

do {
    let registry = try Registry.standard()
    let detector = try Zoo.load("retinanet-r34-composite", registry: registry)
    let image = try ImageFile.read(URL(fileURLWithPath: "patient.dcm"))
    let predictor = try Predictor(detectors: [detector])
    predictor.filter = ConfidenceFilter(threshold: 0.3)
    let found = predictor.detect([image])[0]
    if found.isEmpty { print("no opacities found (no box scores above 0.3)") }
    for d in found { print(d.score, d.box) }
} catch {
    // every error names what went wrong (here: a missing or unreadable file, a model not found)
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
