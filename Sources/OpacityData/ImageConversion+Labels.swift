import Foundation
import OpacityCore

extension ImageConversion {
    /// One image of a conversion: its input, its output and both sizes in pixels.
    public struct ConvertedImage: Sendable, Hashable {
        /// The input file.
        public var source: URL
        /// The PNG.
        public var output: URL
        /// The input's width in pixels (a DICOM's Columns).
        public var sourceWidth: Int
        /// The input's height in pixels (a DICOM's Rows).
        public var sourceHeight: Int
        /// The PNG's width in pixels.
        public var outputWidth: Int
        /// The PNG's height in pixels.
        public var outputHeight: Int
        /// Whether the output existed and was kept (not converted again): its size is then
        /// that of the PNG found, whatever size it was made at.
        public var existed: Bool

        /// An image and its sizes.
        public init(source: URL, output: URL, sourceWidth: Int, sourceHeight: Int, outputWidth: Int, outputHeight: Int, existed: Bool) {
            self.source = source
            self.output = output
            self.sourceWidth = sourceWidth
            self.sourceHeight = sourceHeight
            self.outputWidth = outputWidth
            self.outputHeight = outputHeight
            self.existed = existed
        }

        /// Output pixels per source pixel along x: `outputWidth / sourceWidth`.
        public var scaleX: Double { Double(outputWidth) / Double(max(1, sourceWidth)) }
        /// Output pixels per source pixel along y: `outputHeight / sourceHeight`.
        public var scaleY: Double { Double(outputHeight) / Double(max(1, sourceHeight)) }
    }

    /// A labels table moved into the pixels of converted images (``scaleLabels(_:summary:)``).
    public struct ScaledLabels: Sendable {
        /// The scaled table: the input's header and columns, and the rows whose image was
        /// converted (or kept), in input order with their input line numbers.
        public var table: CSVTable
        /// The rows left out because their image was not converted: the line in the input,
        /// the image the row names and why.
        public var dropped: [(line: Int, image: String, reason: String)]
        /// Rows written whose box reaches beyond its source image by more than 1% of its size
        /// (the rule of ``DatasetRecord/checkBoxes(width:height:)``, which `train` and `eval`
        /// apply to the converted images): the line in the input, the image and the box and
        /// image size, so that the caller can warn before training refuses them.
        public var outside: [(line: Int, image: String, reason: String)] = []

        /// The table as CSV text (``CSVTable/render(header:rows:)``).
        public var csv: String { CSVTable.render(header: table.header, rows: table.rows.map(\.fields)) }

        /// Writes ``csv`` atomically (a temporary file, then a rename): a reader never sees
        /// half a file.
        /// - Parameter url: the file.
        /// - Throws: ``DataError/unwritableFile(path:reason:)``.
        public func write(to url: URL) throws {
            do { try Data(csv.utf8).write(to: url, options: .atomic) } catch {
                throw DataError.unwritableFile(path: url.path, reason: error.localizedDescription)
            }
        }
    }

    /// Moves a labels table's boxes into the pixels of the images a conversion wrote.
    ///
    /// The table is an RSNA labels file (`patientId,x,y,width,height,Target`, checked by the
    /// rules of ``RSNALabels``) or a boxes CSV as ``BoxesCSV`` reads it (an image column, then
    /// `x,y,width,height` or `x1,y1,x2,y2`; other columns kept as they are). A row's image is
    /// the converted input whose name without extension is the row's image field (an RSNA
    /// `patientId`), or whose file name it is (`a.dcm`, which becomes the output's name,
    /// `a.png`). Its box is scaled by ``ConvertedImage/scaleX`` along x and
    /// ``ConvertedImage/scaleY`` along y (the image's own sizes, so not assuming square images)
    /// and written to 0.01 pixel with at least one decimal, like the RSNA files (`158.0`,
    /// `53.25`: halves and quarters of whole pixels are exact); where both scales are 1 the
    /// fields are kept as written. Rows without a box stay as they are. Rows whose image is not
    /// among ``Summary/images`` (no such input, or its conversion failed) are left out and
    /// listed in ``ScaledLabels/dropped``; rows whose box reaches beyond the source image are
    /// written, and listed in ``ScaledLabels/outside``.
    /// - Parameters:
    ///   - labels: the table, read with ``CSVTable/init(contentsOf:)`` (a pipe works).
    ///   - summary: what ``convert(input:output:options:progress:)`` returned; run it with
    ///     ``Options/measureSkipped`` so that inputs whose output existed keep their rows.
    /// - Returns: the scaled table and the rows left out.
    /// - Throws: ``DataError/csvHeader(path:found:expected:)`` when the image or box columns are
    ///   missing; ``DataError/csvValue(path:line:column:value:expected:nearest:)`` and
    ///   ``DataError/inconsistentLabels(path:line:reason:)`` naming the file, line and column of
    ///   the first bad value.
    public static func scaleLabels(_ labels: CSVTable, summary: Summary) throws -> ScaledLabels {
        if labels.header == RSNALabels.labelsHeader { _ = try RSNALabels.load(table: labels, classInfo: nil) }
        let columns = try BoxesCSV.columns(of: labels)
        var byName: [String: (image: ConvertedImage, outputName: String?)] = [:]
        for image in summary.images {
            byName[OutputPaths.imageID(image.source)] = (image, nil)
            byName[image.source.lastPathComponent] = (image, image.output.lastPathComponent)
        }
        var failed: [String: String] = [:]
        for f in summary.failures {
            let url = URL(fileURLWithPath: f.path)
            failed[OutputPaths.imageID(url)] = f.reason
            failed[url.lastPathComponent] = f.reason
        }
        var out = labels
        out.rows = []
        var dropped: [(line: Int, image: String, reason: String)] = []
        var outside: [(line: Int, image: String, reason: String)] = []
        for (line, row) in labels.rows {
            let name = row[columns.image].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty else {
                throw DataError.csvValue(path: labels.path, line: line, column: labels.header[columns.image], value: "",
                                         expected: "an image name", nearest: nil)
            }
            let box = try BoxesCSV.box(row, line: line, in: labels, columns: columns)
            guard let (image, outputName) = byName[name] else {
                let reason = failed[name].map { "its conversion failed: \($0)" } ?? "no such input was converted"
                dropped.append((line, name, reason))
                continue
            }
            if let b = box, DatasetRecord.reachesBeyond(b, width: image.sourceWidth, height: image.sourceHeight) {
                outside.append(
                    (line, name, "the box (x \(b.x), y \(b.y), w \(b.width), h \(b.height)) reaches beyond its "
                        + "\(image.sourceWidth) x \(image.sourceHeight) source image"))
            }
            var fields = row
            if let outputName { fields[columns.image] = outputName }
            let sx = image.scaleX, sy = image.scaleY
            if box != nil, sx != 1 || sy != 1 {
                for (k, c) in columns.box.enumerated() {
                    // x, y, width, height or x1, y1, x2, y2: even positions are along x
                    let v = Double(fields[c].trimmingCharacters(in: .whitespaces)) ?? 0
                    fields[c] = scaledNumber(v * (k % 2 == 0 ? sx : sy))
                }
            }
            out.rows.append((line, fields))
        }
        return ScaledLabels(table: out, dropped: dropped, outside: outside)
    }
}

/// A scaled coordinate to 0.01 pixel, trailing zeros dropped down to one decimal
/// (`158.0`, `158.5`, `53.25`).
func scaledNumber(_ v: Double) -> String {
    var r = (v * 100).rounded() / 100
    if r == 0 { r = 0 }  // no "-0.0"
    var s = String(format: "%.2f", r)
    if s.hasSuffix("0") { s.removeLast() }
    return s
}
