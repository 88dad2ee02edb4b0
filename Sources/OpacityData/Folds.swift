import Foundation
import OpacityCore
import OpacityTensor

/// A k-fold split at patient level, stratified by the 3 image classes.
///
/// Train on every fold but `k` and validate on fold `k` (the paper uses 4 folds). The file
/// form is a CSV `patientId,class,fold` (class as its label, fold 0-based), the same
/// columns as the paper's `folds.csv`; the class is empty for a patient whose class the
/// labels do not give (no class-info file: a patient without boxes). A fourth column `view`
/// (the film's view position, `AP`, `PA`, ..., empty where unknown) is written when
/// ``views`` is not empty, as `opacity folds --stratify view` does; `opacity eval` reads it
/// to report the metric per view for images whose files do not carry it (PNG).
public struct Folds: Sendable, Equatable {
    /// The number of folds.
    public let count: Int
    /// Patient ids in file order.
    public private(set) var ids: [String]
    /// Fold of each patient.
    public private(set) var fold: [String: Int]
    /// Class of each patient whose class is known (patients of unknown class are absent).
    public private(set) var classes: [String: ImageClass]
    /// View position of each patient whose view is known (upper case, e.g. `AP`, `PA`; the
    /// file's `view` column); empty when the file has no such column.
    public var views: [String: String] = [:]

    /// The CSV header.
    public static let header = ["patientId", "class", "fold"]

    /// A stratified, seeded split.
    ///
    /// Patients of each class are sorted by id, shuffled with a generator seeded by
    /// `(seed, class)`, and dealt round-robin, each class continuing where the previous one
    /// stopped; so per-fold counts differ by at most one per class and at most one in
    /// total, and the same input and seed always give the same split. Patients of unknown
    /// class (`nil`: without boxes, no class file) form one more group, dealt after "Normal"
    /// and shuffled with its seed, so a split of labels without the class file is the one
    /// earlier versions made when they counted those patients as "Normal".
    /// - Parameters:
    ///   - patients: `(id, class)` pairs; duplicate ids are counted once.
    ///   - count: the number of folds, at least 2.
    ///   - seed: the shuffle seed.
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)`` named `folds` for
    ///   a fold count under 2 or over the number of distinct patients (the nearest valid count
    ///   with it), ``DataError/inconsistentLabels(path:line:reason:)`` when one id has two classes.
    public static func stratified(_ patients: [(id: String, imageClass: ImageClass?)], count: Int = 4, seed: UInt64 = 42) throws -> Folds {
        try stratified(patients, count: count, seed: seed, strata: [:])
    }

    /// A split stratified by class and by a second key per patient (for chest films the view
    /// position, `AP` or `PA`, which the RSNA labels confound with the class).
    ///
    /// Each (class, stratum) group is shuffled and dealt round-robin as in
    /// ``stratified(_:count:seed:)``, groups in the order of class then stratum name, each
    /// continuing where the previous one stopped; patients missing from `strata` form the
    /// stratum `""`. With empty `strata` the split equals ``stratified(_:count:seed:)``'s.
    /// - Parameters:
    ///   - patients: `(id, class)` pairs; duplicate ids are counted once.
    ///   - count: the number of folds, at least 2.
    ///   - seed: the shuffle seed.
    ///   - strata: the second key of each patient id (e.g. its view position).
    /// - Throws: as ``stratified(_:count:seed:)``.
    public static func stratified(_ patients: [(id: String, imageClass: ImageClass?)], count: Int, seed: UInt64,
                                  strata: [String: String]) throws -> Folds {
        guard count >= 2 else {
            throw DataError.invalidParameter(name: "folds", value: "\(count)", expected: "at least 2", nearest: "2")
        }
        var seen: [String: ImageClass?] = [:]
        for p in patients {
            if let c = seen[p.id], c != p.imageClass {
                throw DataError.inconsistentLabels(path: "<folds>", line: 0,
                                                   reason: "patient \(p.id) has classes '\(c?.label ?? "unknown")' and '\(p.imageClass?.label ?? "unknown")'")
            }
            seen[p.id] = p.imageClass
        }
        try requireFit(count: count, patients: seen.count)
        var fold: [String: Int] = [:]
        var ids: [String] = []
        var offset = 0
        let strataNames = Set(seen.keys.map { strata[$0] ?? "" }).sorted()
        // unknown (nil) after Normal with Normal's seed: see the doc comment
        let groups: [(ImageClass?, ImageClass)] = [(.notNormal, .notNormal), (.normal, .normal), (nil, .normal), (.lungOpacity, .lungOpacity)]
        for (c, seedClass) in groups {
          for (si, stratum) in strataNames.enumerated() {
            var group = seen.filter { $0.value == c && (strata[$0.key] ?? "") == stratum }.map(\.key).sorted()
            var rng = RandomGenerator(seed: seed, stream: (UInt64(seedClass.rawValue) &+ 1) &+ UInt64(si) &* 0x1_0000)
            if group.count > 1 {
                for i in stride(from: group.count - 1, to: 0, by: -1) {
                    let j = rng.nextInt(i + 1)
                    group.swapAt(i, j)
                }
            }
            for (i, id) in group.enumerated() { fold[id] = (offset + i) % count }
            offset = (offset + group.count) % count
            ids += group
          }
        }
        ids.sort()
        return Folds(count: count, ids: ids, fold: fold, classes: seen.compactMapValues { $0 })
    }

    /// Refuses a fold count the patients cannot fill: the split deals patients over the
    /// folds, so folds beyond the patients would be empty. ``stratified(_:count:seed:strata:)``
    /// calls it; `opacity folds` calls it before it reads any image header.
    /// - Parameters:
    ///   - count: the number of folds asked for.
    ///   - patients: the number of distinct patients.
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)`` named `folds`,
    ///   with `patients` as the nearest valid count when there are at least 2.
    public static func requireFit(count: Int, patients: Int) throws {
        guard count > patients else { return }
        let has = "the data has \(Wording.count(patients, "patient"))"
        guard patients >= 2 else {
            throw DataError.invalidParameter(name: "folds", value: "\(count)", expected: "a split of at least 2 patients, and \(has)", nearest: nil)
        }
        throw DataError.invalidParameter(
            name: "folds", value: "\(count)",
            expected: "an integer in 2...\(patients): more folds than patients leave folds empty, and \(has)", nearest: "\(patients)")
    }

    /// A stratified split of a dataset's records (see ``stratified(_:count:seed:)``).
    public static func stratified(_ dataset: DetectionDataset, count: Int = 4, seed: UInt64 = 42) throws -> Folds {
        try stratified(dataset.records.map { (id: $0.id, imageClass: $0.imageClass) }, count: count, seed: seed)
    }

    /// A stratified split of a dataset's records by class and a second key per id
    /// (see ``stratified(_:count:seed:strata:)``).
    public static func stratified(_ dataset: DetectionDataset, count: Int, seed: UInt64, strata: [String: String]) throws -> Folds {
        try stratified(dataset.records.map { (id: $0.id, imageClass: $0.imageClass) }, count: count, seed: seed, strata: strata)
    }

    /// Patients per class in each fold: `counts[fold][class.rawValue]` (patients of known class).
    public var classCounts: [[Int]] {
        var c = [[Int]](repeating: [0, 0, 0], count: count)
        for id in ids { if let k = classes[id] { c[fold[id]!][k.rawValue] += 1 } }
        return c
    }

    /// Patients of unknown class in each fold.
    public var unknownClassCounts: [Int] {
        var c = [Int](repeating: 0, count: count)
        for id in ids where classes[id] == nil { c[fold[id]!] += 1 }
        return c
    }

    /// The ids in fold `k`, in file order.
    public func ids(inFold k: Int) -> [String] { ids.filter { fold[$0] == k } }

    /// Splits a dataset: fold `validationFold` for validation, the rest for training.
    /// - Throws: ``DataError/invalidParameter(name:value:expected:nearest:)`` for a fold
    ///   out of range or when dataset records are not in the folds file.
    public func split(_ dataset: DetectionDataset, validationFold k: Int) throws -> (train: DetectionDataset, validation: DetectionDataset) {
        guard (0..<count).contains(k) else {
            throw DataError.invalidParameter(name: "fold", value: "\(k)", expected: "0...\(count - 1)", nearest: "\(min(max(k, 0), count - 1))")
        }
        let unknown = dataset.records.filter { fold[$0.id] == nil }
        if !unknown.isEmpty {
            throw DataError.invalidParameter(name: "folds", value: "\(unknown.count) patients without a fold, e.g. \(unknown[0].id)",
                                             expected: "a folds file covering every patient of the dataset", nearest: nil)
        }
        var train = dataset, val = dataset
        train.records = dataset.records.filter { fold[$0.id] != k }
        val.records = dataset.records.filter { fold[$0.id] == k }
        return (train, val)
    }

    /// The most folds a folds file may have.
    public static let maximumCount = 100

    /// The CSV text (`patientId,class,fold`, sorted by id; the class empty where unknown),
    /// with a `view` column (empty where unknown) when ``views`` is not empty.
    public var csv: String {
        guard !views.isEmpty else {
            return CSVTable.render(header: Folds.header, rows: ids.map { [$0, classes[$0]?.label ?? "", String(fold[$0]!)] })
        }
        return CSVTable.render(header: Folds.header + ["view"], rows: ids.map { [$0, classes[$0]?.label ?? "", String(fold[$0]!), views[$0] ?? ""] })
    }

    /// Writes the CSV.
    /// - Throws: ``DataError/unwritableFile(path:reason:)``.
    public func write(to url: URL) throws { try writeData(Data(csv.utf8), to: url) }

    /// Reads a folds CSV (`patientId,class,fold`, optionally with a fourth column `view`).
    /// - Parameters:
    ///   - url: the file.
    ///   - expectedCount: when set, the number of folds the file must have.
    /// - Throws: ``DataError`` naming the line and column of a bad value.
    public static func read(from url: URL, expectedCount: Int? = nil) throws -> Folds {
        let t = try CSVTable(contentsOf: url)
        let hasViews = t.header == header + ["view"]
        if !hasViews { try t.requireHeader(header) }
        var ids: [String] = [], fold: [String: Int] = [:], classes: [String: ImageClass] = [:], views: [String: String] = [:]
        let labels = ImageClass.allCases.map(\.label)
        var maxFold = -1
        for (line, f) in t.rows {
            let id = f[0]
            let label = f[1].trimmingCharacters(in: .whitespaces)
            let c = ImageClass(label: label)
            guard c != nil || label.isEmpty else {
                throw DataError.csvValue(path: url.path, line: line, column: "class", value: f[1],
                                         expected: "one of \(labels.joined(separator: ", ")) (or empty: not known)", nearest: nearestName(f[1], in: labels))
            }
            guard let k = Int(f[2].trimmingCharacters(in: .whitespaces)), k >= 0, k < (expectedCount ?? Folds.maximumCount) else {
                throw DataError.csvValue(path: url.path, line: line, column: "fold", value: f[2],
                                         expected: "an integer in 0...\((expectedCount ?? Folds.maximumCount) - 1)",
                                         nearest: nil)
            }
            let view = hasViews ? f[3].trimmingCharacters(in: .whitespaces).uppercased() : ""
            if let old = fold[id] {
                if old != k || classes[id] != c || (views[id] ?? "") != view {
                    throw DataError.inconsistentLabels(path: url.path, line: line,
                                                       reason: "patient \(id) appears twice with different fold, class or view")
                }
                continue
            }
            ids.append(id)
            fold[id] = k
            if let c { classes[id] = c }
            if !view.isEmpty { views[id] = view }
            maxFold = max(maxFold, k)
        }
        let n = expectedCount ?? (maxFold + 1)
        guard n >= 2 else {
            throw DataError.invalidParameter(name: "folds", value: "\(n)", expected: "a file with at least 2 folds (\(url.path))", nearest: nil)
        }
        var folds = Folds(count: n, ids: ids, fold: fold, classes: classes)
        folds.views = views
        return folds
    }

    init(count: Int, ids: [String], fold: [String: Int], classes: [String: ImageClass]) {
        self.count = count
        self.ids = ids
        self.fold = fold
        self.classes = classes
    }
}
