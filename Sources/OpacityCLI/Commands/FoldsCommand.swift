import ArgumentParser
import Foundation
import Opacity

/// `opacity folds`: writes a stratified folds file for `train --folds-file`.
struct FoldsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "folds",
        abstract: "Write a k-fold split stratified by class, and by view position when asked.",
        discussion: """
            The split is at patient level and seeded. With --stratify view the DICOM ViewPosition (AP, PA, ...) of each image is read from its header and every (class, view) group is dealt evenly over the folds: in the RSNA labels the positives are mostly AP films and the negatives mostly PA, so a split by class alone can leave one fold's views unlike another's. Images without a ViewPosition (PNG files) form their own group. The file then has a fourth column, view (empty where unknown), from which `opacity eval --folds-file` reports the metric per view for images that do not carry their view (PNG). The per-fold counts are printed as a table. An existing -o/--output file is not replaced without --overwrite.

            Examples:
              opacity folds --data rsna1k --stratify view -o folds.csv
              opacity train --data rsna1k --folds-file folds.csv --fold 2 ...
            """)

    @OptionGroup var dataOptions: DataOptions
    @Option(name: .long, parsing: .unconditional, help: "Number of folds. (default: 4)") var count: Int?
    /// `train`'s spelling of the same number (`train --folds 5`), taken here too.
    @Option(name: .customLong("folds"), parsing: .unconditional, help: ArgumentHelp("train's spelling of --count.", visibility: .hidden))
    var foldsSpelling: Int?
    @Option(name: .long, parsing: .unconditional, help: "Shuffle seed.") var seed: UInt64 = 42
    @Option(name: .long, help: "What to stratify by: class, or class and view (DICOM ViewPosition).")
    var stratify: FoldStrata = .class
    @Option(name: [.short, .customLong("output")], help: "The folds CSV to write (patientId,class,fold; with --stratify view also view).") var output: String
    @Flag(name: .long, help: "Replace an existing -o/--output file.") var overwrite = false

    /// The number of folds, from --count or train's spelling --folds (4 by default).
    var folds: Int { foldsSpelling ?? count ?? 4 }

    func validate() throws {
        if let f = foldsSpelling, let count, count != f {
            throw ValidationError("--folds \(f) and --count \(count) disagree; --folds is train's spelling of --count: give one")
        }
        let option = foldsSpelling == nil ? "--count" : "--folds"
        try requireRange(option, folds, 2, Folds.maximumCount)
    }

    func run() throws {
        try requireOutputFile(output, option: "-o/--output", for: "the folds CSV")
        let location = try dataOptions.location()
        // the folds file never replaces the labels or class-info CSV or an image it is made from;
        // said before an earlier result is (trial: "exists (an earlier run's); add --overwrite"
        // for the labels CSV, and --overwrite was then refused as an input)
        switch location {
        case .rsna(let root): try refuseOverwritingDataInputs(output, option: "-o/--output", folders: rsnaInputFolders(root))
        case .csv(let labels, let images): try refuseOverwritingDataInputs(output, option: "-o/--output", folders: [images], files: [labels])
        }
        try refuseEarlierResults([output], overwrite: overwrite, replacing: "the earlier folds file", otherwise: "name another file with -o/--output")
        let dataset = try location.load(skipProblemImages: dataOptions.skipUnreadable)
        // more folds than patients, refused before anything is written or any header read (new-user
        // trial: `--count 100` on 40 patients wrote 60 empty folds, silently)
        do { try Folds.requireFit(count: folds, patients: Set(dataset.records.map(\.id)).count) } catch {
            throw foldCountAsOption(error, option: foldsSpelling == nil ? "--count" : "--folds")
        }
        try refuseOverwritingDataInputs(output, option: "-o/--output", images: dataset.records.compactMap(\.imageURL))
        var views: [String: String] = [:]
        if stratify == .view {
            // as eval reads them: an unreadable header stops with the file named
            for r in dataset.records {
                if let url = r.imageURL, let v = try ViewPositions.dicomView(of: url) { views[r.id] = v }
            }
        }
        var split = try Folds.stratified(dataset, count: folds, seed: seed, strata: views)
        split.views = views
        let url = URL(fileURLWithPath: output)
        try split.write(to: url)
        // per-fold table: class x view
        let viewNames = Set(dataset.records.map { views[$0.id] ?? "-" }).sorted()
        var header = "fold"
        // patients of unknown class (no class file: without boxes) get their own column
        let classes: [ImageClass?] = ImageClass.allCases + (dataset.unknownClassCount > 0 ? [nil] : [])
        for c in classes { for v in viewNames { header += "\t\(c?.shortName ?? "CLASS UNKNOWN")/\(v)" } }
        say(header + "\ttotal")
        for k in 0..<folds {
            var line = "\(k)"
            let ids = Set(split.ids(inFold: k))
            for c in classes {
                for v in viewNames {
                    line += "\t\(dataset.records.filter { ids.contains($0.id) && $0.imageClass == c && (views[$0.id] ?? "-") == v }.count)"
                }
            }
            say(line + "\t\(ids.count)")
        }
        say("wrote \(url.path): \(split.ids.count) patients in \(folds) folds (stratified by \(stratify == .view ? "class and view" : "class"))")
    }
}

/// What `opacity folds --stratify` balances over the folds.
enum FoldStrata: String, CaseIterable, ExpressibleByArgument {
    /// The three image classes.
    case `class`
    /// The classes and the DICOM view position (AP, PA, ...).
    case view
}
