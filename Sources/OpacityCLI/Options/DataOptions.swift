import ArgumentParser
import Foundation
import Opacity

/// Options naming a labelled dataset: an RSNA-layout folder, or a CSV of boxes with an
/// image folder.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A folder in the Kaggle RSNA layout (as downloaded, or made by `opacity synth`).", valueName: "dir"))
    var data: String?

    @Option(name: .long, help: ArgumentHelp("A CSV of boxes for any folder of images (use with --images).", valueName: "csv"))
    var labels: String?

    @Option(name: .long, help: ArgumentHelp("The image folder the --labels CSV refers to.", valueName: "dir"))
    var images: String?

    @Flag(name: .long, help: "Leave out missing or unreadable images (they are reported) instead of stopping.")
    var skipUnreadable = false

    func location() throws -> DataLocation {
        switch (data, labels, images) {
        case (let d?, nil, nil):
            try requireExistingPath("--data", d, directory: true, expected: "a folder in the Kaggle RSNA layout")
            return .rsna(URL(fileURLWithPath: d))
        case (nil, let l?, let i?):
            try requireNotAFolder("--labels", l, expected: "a CSV file of boxes (patientId,x,y,width,height,Target), e.g. stage_2_train_labels.csv")
            try requireExistingPath("--labels", l, directory: false, expected: "a CSV of boxes")
            try requireExistingPath("--images", i, directory: true, expected: "the folder of images the CSV names")
            return .csv(labels: URL(fileURLWithPath: l), images: URL(fileURLWithPath: i))
        case (nil, _?, nil): throw ValidationError("--labels needs --images (the folder its image column refers to)")
        case (nil, nil, _?): throw ValidationError("--images needs --labels (a CSV of boxes)")
        case (nil, nil, nil): throw ValidationError("name the data: --data DIR (RSNA layout) or --labels CSV --images DIR")
        default: throw ValidationError("give either --data or --labels with --images, not both")
        }
    }
}
