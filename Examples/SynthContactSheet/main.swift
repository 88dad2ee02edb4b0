// Writes a contact sheet: real RSNA positives with their boxes next to synthetic composites in
// the old (ovals) and new (patchy) opacity styles, each as whole films and as crops around the
// boxes, so a reader can judge the synthetic opacities against real ones.
//
//     swift run -c release synth-contact-sheet REAL_RSNA_FOLDER BACKGROUNDS_FOLDER OUT.png [PER_ROW]
//
// REAL_RSNA_FOLDER: a Kaggle-layout folder (e.g. ../shared/realdata/rsna1k); BACKGROUNDS_FOLDER:
// real films without opacities to composite onto (as scripts/train-zoo-model.sh gathers them).
import Foundation
import Opacity

let args = CommandLine.arguments
guard args.count >= 4 else {
    FileHandle.standardError.write(Data("usage: synth-contact-sheet REAL_RSNA_FOLDER BACKGROUNDS_FOLDER OUT.png [PER_ROW]\n".utf8))
    exit(2)
}
let perRow = args.count > 4 ? Int(args[4]) ?? 6 : 6
let tile = 256

/// The square crop around the union of `boxes`, 30 % larger, clamped to the image.
func crop(_ image: GrayImage, around boxes: [BoundingBox]) -> (GrayImage, [BoundingBox]) {
    guard let first = boxes.first else { return (image, []) }
    var x0 = first.x, y0 = first.y, x1 = first.x2, y1 = first.y2
    for b in boxes.dropFirst() {
        x0 = min(x0, b.x)
        y0 = min(y0, b.y)
        x1 = max(x1, b.x2)
        y1 = max(y1, b.y2)
    }
    let side = min(Float(min(image.width, image.height)), 1.3 * max(x1 - x0, y1 - y0))
    let cx = (x0 + x1) / 2, cy = (y0 + y1) / 2
    let ox = Int(min(max(0, cx - side / 2), Float(image.width) - side))
    let oy = Int(min(max(0, cy - side / 2), Float(image.height) - side))
    let n = Int(side)
    var out = GrayImage(width: n, height: n)
    for y in 0..<n { for x in 0..<n { out.pixels[y * n + x] = image[ox + x, oy + y] } }
    let moved = boxes.map { BoundingBox(x: $0.x - Float(ox), y: $0.y - Float(oy), width: $0.width, height: $0.height) }
    return (out, moved)
}

func rows(_ cases: [(GrayImage, [BoundingBox])], label: String) -> [PreviewTile] {
    var whole: [PreviewTile] = []
    var crops: [PreviewTile] = []
    for (k, c) in cases.enumerated() {
        whole.append(PreviewTile(image: c.0, boxes: c.1, caption: k == 0 ? label : ""))
        let (img, boxes) = crop(c.0, around: c.1)
        crops.append(PreviewTile(image: img, boxes: boxes, caption: k == 0 ? "\(label) crops" : ""))
    }
    return whole + crops
}

do {
    let real = try RSNADataset.load(root: URL(fileURLWithPath: args[1]))
    let positives = real.records.filter { !$0.boxes.isEmpty }
    let step = max(1, positives.count / perRow)
    var realCases: [(GrayImage, [BoundingBox])] = []
    for k in 0..<perRow where k * step < positives.count {
        let r = positives[k * step]
        guard let url = r.imageURL else { continue }
        realCases.append((try ImageFile.read(url), r.boxes))
    }
    var tiles = rows(realCases, label: "real RSNA")
    for style in [SyntheticOpacityStyle.ovals, .patchy] {
        let config = SyntheticConfig(
            count: perRow, size: 512, seed: 7, classFractions: (1, 0, 0), backgroundFolder: URL(fileURLWithPath: args[2]), threads: 1,
            opacityStyle: style)
        let gen = try SyntheticChestXRay(config: config)
        let cases = try (0..<perRow).map { i -> (GrayImage, [BoundingBox]) in
            let c = try gen.generate(index: i)
            return (c.image, c.boxes)
        }
        tiles += rows(cases, label: "synthetic \(style.rawValue)")
    }
    try PNG.write(PreviewGrid.render(tiles, columns: perRow, tileSize: tile), to: URL(fileURLWithPath: args[3]))
    print("wrote \(args[3]) (\(tiles.count) tiles)")
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
