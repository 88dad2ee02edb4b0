import ArgumentParser
import Foundation
import Opacity
import OpacityDistributed

/// `opacity train`.
struct TrainCommand: ParsableCommand {
    /// The library's defaults, shown in help and used for options not given.
    static let defaults = TrainingOptions(config: "retinanet")

    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a detector on one fold, the paper's way.",
        discussion: """
            Defaults follow the paper: Adam at 1e-5, gradient-norm clip 0.05, ReduceLROnPlateau (patience 4, factor 0.2) on the validation regression loss, frozen batch norm, size 512 (from the config), fold 0 of 4, heavy augmentation. Each epoch writes a checkpoint bundle, a line to log.jsonl, and moves the best.opb link. Ctrl-C or SIGTERM stops after writing a checkpoint, as does a reader of the output that stops early (`| head`, exit status 141); --resume continues exactly where the run stopped, with the data, limits and options saved in the run folder (options.json), so it needs only -o; with --epochs it extends the run. A run folder is locked (run.lock) while a run writes it. Every image is read once before the first step: images that cannot be read (or are missing) stop the run before it starts, naming them with the reason; with --skip-unreadable they are left out instead, listed in skipped.csv in the run folder, and the run stops when they are more than 10% of the data.

            Examples:
              opacity train --data rsna \\
                  --config "retinanet(encoder=seresnext101_32x4d, dropout=0.75)"
              opacity train --data synth --config "retinanet(encoder=resnet34, size=256)" \\
                  --lr 1e-4 --freeze-bn off --epochs 12
              opacity train --labels boxes.csv --images pngs --fold 1 \\
                  --aug heavy_norotation
              opacity train -o runs/r34 --resume
              opacity train -o runs/r34 --resume --epochs 24
            """)

    @Option(name: .long, help: ArgumentHelp("The detector config string (see `opacity plugins`).", valueName: "config"))
    var config: String?

    @OptionGroup var dataOptions: DataOptions

    // The recipe options are optional: `nil` is "not given", so that --resume can tell an
    // option given at its default from one left out (each has a computed value below); the
    // choices (--freeze-bn, --best-by) are GivenChoice values, which tell it too and show their
    // default in help as every other choice does.
    @Option(name: .customLong("fold"), parsing: .unconditional, help: "Validation fold (0-based). (default: \(Self.defaults.fold))")
    var givenFold: Int?
    @Option(
        name: .customLong("folds"), parsing: .unconditional,
        help: "Number of folds (stratified by the 3 classes, seed 42). (default: \(Self.defaults.folds), or the --folds-file's number when it has more)")
    var givenFolds: Int?
    @Option(name: .long, help: "A folds CSV (patientId,class,fold) to use instead of the run's own.") var foldsFile: String?
    @Option(name: .long, parsing: .unconditional, help: "Epochs (default: \(Self.defaults.epochs); with --resume, extends or shortens the run to this many).") var epochs: Int?
    @Option(
        name: .customLong("batch"), parsing: .unconditional,
        help: "Images per optimizer step over all processes (the global batch); under MPI each of P processes builds batch/P of them. (default: \(Self.defaults.batchSize))")
    var givenBatch: Int?
    @Option(
        name: .customLong("aug"),
        help: ArgumentHelp(
            "Augmentation preset, optionally with overrides: none, light, medium, heavy, heavy_norotation, heavy_basic_rotation, ... e.g. \"heavy,rotation=3\". (default: \(Self.defaults.augmentation))",
            valueName: "preset"))
    var givenAug: String?
    @Option(name: .customLong("seed"), parsing: .unconditional, help: "Seed for weights, order, augmentation and dropout. (default: \(Self.defaults.seed))")
    var givenSeed: UInt64?
    @Option(name: [.short, .long], help: "Run folder (default: runs/<config>_fold<K>_seed<S>).") var output: String?
    @Option(name: .customLong("out"), help: ArgumentHelp("Deprecated spelling of -o/--output.", visibility: .hidden)) var deprecatedOut: String?
    @Flag(name: .long, help: "Continue the run in -o/--output from its newest checkpoint.") var resume = false
    @Option(name: .long, parsing: .unconditional, help: "Adam learning rate (default: \(Self.defaults.learningRate); with --resume, changes the rate from the checkpoint on).")
    var lr: Double?
    @Option(name: .customLong("clip"), parsing: .unconditional, help: "Gradient-norm clip. (default: \(Self.defaults.clipNorm))") var givenClip: Double?
    @Option(name: .customLong("patience"), parsing: .unconditional, help: "ReduceLROnPlateau patience (epochs). (default: \(Self.defaults.plateauPatience))")
    var givenPatience: Int?
    @Option(name: .customLong("factor"), parsing: .unconditional, help: "ReduceLROnPlateau factor. (default: \(Self.defaults.plateauFactor))")
    var givenFactor: Double?
    @Option(
        name: .customLong("freeze-bn"),
        help: "Batch norm: on (frozen statistics, the paper), off (trained).")
    var givenFreezeBn = GivenChoice<Switch>(default: Switch(TrainCommand.defaults.freezeBatchNorm))
    @Option(name: .long, help: "Start the encoder from a bundle or zoo entry (e.g. from `opacity import`).") var encoderWeights: String?
    @Option(name: .long, help: "Start every weight from a detector bundle or zoo entry (zoo:NAME) of the same architecture (transfer).")
    var initWeights: String?
    @Option(name: .customLong("best-by"), help: "Which epoch best.opb points to.")
    var givenBestBy = GivenChoice<BestBy>(default: BestBy(rawValue: TrainCommand.defaults.bestBy) ?? .metric)
    @Option(
        name: .long, parsing: .unconditional,
        help: "Use at most this many training and at most this many validation images of the fold (as eval's --limit; --limit-train and --limit-val override it for their part)."
    ) var limit: Int?
    @Option(name: .long, parsing: .unconditional, help: "Use at most this many training images of the fold (default: --limit).") var limitTrain: Int?
    @Option(name: .long, parsing: .unconditional, help: "Use at most this many validation images of the fold (default: --limit).") var limitVal: Int?
    @OptionGroup var runtime: RuntimeOptions
    @Option(name: .long, parsing: .unconditional, help: "Background loader threads.") var workers: Int = 2
    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Stop (as Ctrl-C does) after this many steps of this invocation.", visibility: .hidden))
    var stopAfter: Int?
    @Flag(name: .long, help: ArgumentHelp("With --resume: only validate the newest checkpoint and print the exact numbers.", visibility: .hidden))
    var validateOnly = false
    @OptionGroup var distributedOptions: DistributedOptions
    @Option(
        name: .long, parsing: .unconditional,
        help: "Under MPI: gradients are averaged in buckets of at most this many MiB, each sent while backward goes on (PyTorch DDP's default: 25).")
    var bucketMib: Double = 25

    @OptionGroup var pluginOptions: PluginOptions

    /// `--fold`, else the default.
    var fold: Int { givenFold ?? Self.defaults.fold }
    /// `--folds`, else the default or, when `--folds-file` has more folds, the file's number
    /// (trial: a 5-fold file from `opacity folds --count 5` was refused at its first fold 4
    /// unless `--folds 5` was repeated, and `--fold 4` was said to be outside 0...3).
    var folds: Int { givenFolds ?? max(Self.defaults.folds, foldsInFile ?? 0) }
    /// The number of folds (highest fold + 1) of a `--folds-file` that is a regular file that
    /// reads; `nil` otherwise (a pipe is refused by `validate()`, a missing or bad file by
    /// `run()`, naming it).
    var foldsInFile: Int? {
        guard let foldsFile else { return nil }
        var st = stat()
        guard stat(foldsFile, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return nil }
        return try? Folds.read(from: URL(fileURLWithPath: foldsFile)).count
    }
    /// `--batch`, else the default.
    var batch: Int { givenBatch ?? Self.defaults.batchSize }
    /// `--aug`, else the default.
    var aug: String { givenAug ?? Self.defaults.augmentation }
    /// `--seed`, else the default.
    var seed: UInt64 { givenSeed ?? Self.defaults.seed }
    /// `--clip`, else the default.
    var clip: Double { givenClip ?? Self.defaults.clipNorm }
    /// `--patience`, else the default.
    var patience: Int { givenPatience ?? Self.defaults.plateauPatience }
    /// `--factor`, else the default.
    var factor: Double { givenFactor ?? Self.defaults.plateauFactor }
    /// `--freeze-bn`, else the default.
    var freezeBn: Switch { givenFreezeBn.value }
    /// `--best-by`, else the default.
    var bestBy: BestBy { givenBestBy.value }

    /// The training images' limit: `--limit-train`, else `--limit`.
    var trainLimit: Int? { limitTrain ?? limit }
    /// The validation images' limit: `--limit-val`, else `--limit`.
    var validationLimit: Int? { limitVal ?? limit }

    func validate() throws {
        if let lr, !(lr.isFinite && lr > 0) { throw outOfRange("--lr", Wording.plainNumber(lr), expected: "a finite positive number, e.g. 1e-5 (the paper's)") }
        try requireRange("--workers", workers, 0, 64)
        try requireAtLeast("--stop-after", stopAfter, 1)
        // every number of the recipe, with its valid range
        var o = TrainingOptions(config: "retinanet")
        o.epochs = epochs ?? Self.defaults.epochs
        o.batchSize = batch
        o.learningRate = lr ?? Self.defaults.learningRate
        o.clipNorm = clip
        o.plateauPatience = patience
        o.plateauFactor = factor
        o.fold = fold
        o.folds = folds
        try requireAtLeast("--limit", limit, 1)
        if let foldsFile, let givenFolds, let inFile = foldsInFile, inFile > givenFolds {
            throw ValidationError(
                "--folds \(givenFolds) disagrees with --folds-file \(foldsFile): it has \(inFile) folds (0...\(inFile - 1)); "
                    + "leave out --folds, or pass --folds \(inFile)")
        }
        o.limitTrain = trainLimit
        o.limitValidation = validationLimit
        do { try o.validate() } catch let e as RunError { throw ValidationError(e.description) }
        do { _ = try AugmentationConfig(parsing: aug) } catch { throw namingOption(error, ["augmentation": "--aug"], keysOf: "--aug") }
        // a bundle path that names nothing (zoo:NAME and zoo names are looked up later)
        for (option, value) in [("--init-weights", initWeights), ("--encoder-weights", encoderWeights)] {
            guard let value, Zoo.entryName(inReference: value) == nil else { continue }
            if value.hasSuffix(".opb") || value.contains("/") {
                try requireExistingPath(option, value, directory: false, expected: "a bundle (.opb) or zoo:NAME")
            } else if !FileManager.default.fileExists(atPath: value) {
                // a bare word names no file here: most often a zoo name written without zoo:
                let names = (try? Zoo.standard().items.map(\.entry.name)) ?? []
                let meant = names.contains(value) ? value : nearestMatch(value, in: names)
                throw ValidationError(
                    "\(option) \(value): no such file; expected a bundle (.opb) or zoo:NAME"
                        + (meant.map { " (did you mean zoo:\($0)?)" } ?? "; `opacity zoo list` lists the zoo's names"))
            }
        }
        if resume && output == nil && deprecatedOut == nil { throw ValidationError("--resume needs -o/--output RUNDIR (the run to continue)") }
        // a pipe is read once: the labels are recorded for --resume (and read by every
        // process of a distributed run), the folds file is read here and again with the data
        if let labels = dataOptions.labels {
            try requireRereadable(labels, option: "--labels", reason: "the run records its path and reads it again on --resume; every process of a distributed run reads it")
        }
        if let foldsFile {
            try requireRereadable(foldsFile, option: "--folds-file", reason: "train checks the fold in it, then reads it again with the data")
        }
    }

    func run() throws {
        let group = try distributedOptions.makeGroup(threads: runtime.threads)
        (group as? MPIProcessGroup)?.bucketBytes = max(1, Int(bucketMib * 1_048_576))
        try runCollectively(group, command: "train") { try train(group) }
    }

    private func train(_ group: ProcessGroup) throws {
        // a data error (1) that names the option and the nearest file, as score --labels
        if let foldsFile { try requireExistingDataFile("--folds-file", foldsFile, expected: EvalCommand.foldsFileExpected) }
        let out = try resolveOutput(output, deprecated: deprecatedOut)
        if let out { try requireOutputFolder(out, option: "-o/--output", for: "the run: checkpoints, log.jsonl, curves") }
        let registry = try pluginOptions.registry()
        var options: TrainingOptions
        let outURL: URL
        var resumed: TrainingSetup?
        if resume, let out, let saved = try TrainingSetup.savedOptions(in: URL(fileURLWithPath: out)) {
            if let config, try commandLineConfig(config, option: "--config", registry: registry) != saved.config {
                throw ValidationError("--config differs from the run's own (\(saved.config)); drop --config to resume, or use another -o/--output")
            }
            // limits and skipping are the run's own: others are a usage error naming the option
            // (new-user trial: `--resume --limit 4` exited 1 after the data had loaded)
            if saved.dataRoot != nil || saved.labelsPath != nil, let refused = refusedWithResume(saved, run: out) { throw refused }
            if let changed = recipeChangedOnResume(saved, run: out) { throw changed }
            // a run that has all its epochs: nothing is loaded or written, and the message says
            // how to go on (new-user trial: it printed "done: 0 epochs run"); limits or skipping
            // other than the run's own are left to the usual path, which refuses them
            let sameLimits =
                (trainLimit ?? saved.limitTrain) == saved.limitTrain && (validationLimit ?? saved.limitValidation) == saved.limitValidation
                && (!dataOptions.skipUnreadable || saved.skipProblemImages == true)
            if !validateOnly, sameLimits, let done = Self.finishedEpochs(in: URL(fileURLWithPath: out)), done.epoch >= (epochs ?? saved.epochs) {
                say(Self.alreadyFinished(out, state: done, epochs: epochs))
                return
            }
            // a run stopped in the middle of an epoch, asked for no more epochs than it has run:
            // nothing to train, and its options.json keeps its own epochs (trial: `--resume
            // --epochs 2` on a 30-epoch run stopped in epoch 5 rewrote them to 2, and a plain
            // --resume then called the run finished)
            if !validateOnly, sameLimits, let epochs, let stopped = Self.stoppedInEpoch(in: URL(fileURLWithPath: out)), epochs <= stopped.epoch {
                say(Self.stoppedBeyond(out, state: stopped, epochs: epochs, planned: saved.epochs))
                return
            }
            // the run's own data, limits and folds; data options given now replace the data
            // location only (a moved folder)
            if dataOptions.data == nil && dataOptions.labels == nil && dataOptions.images == nil {
                resumed = try TrainingSetup.resuming(runDirectory: URL(fileURLWithPath: out))
            }
            options = saved
            if let epochs { options.epochs = epochs }  // extend (or shorten) the run
            outURL = URL(fileURLWithPath: out)
        } else {
            if resume, let out, dataOptions.data == nil && dataOptions.labels == nil && dataOptions.images == nil {
                // nothing to continue and no data to start from: say so, with the nearest folder
                // (new-user trial: a misspelled run folder got "name the data: --data DIR ...")
                try requireExistingPath("-o/--output", out, directory: true, expected: "the folder of the run to continue (--resume)")
                throw ValidationError(
                    "--resume: \(out) holds no run to continue (no options.json); name the run's folder with -o/--output, "
                        + "or start a run there with --data DIR or --labels CSV --images DIR")
            }
            // a config string given here is checked before the data loads: its errors are usage errors (64)
            options = TrainingOptions(config: try config.map { try commandLineConfig($0, option: "--config", registry: registry) } ?? registry.canonical("retinanet"))
            options.epochs = epochs ?? Self.defaults.epochs
            options.batchSize = batch
            options.learningRate = lr ?? Self.defaults.learningRate
            options.clipNorm = clip
            options.plateauPatience = patience
            options.plateauFactor = factor
            options.freezeBatchNorm = freezeBn.isOn
            options.seed = seed
            options.bestBy = bestBy.rawValue
            options.fold = fold
            options.folds = folds
            options.augmentation = aug
            options.encoderWeights = encoderWeights
            options.initWeights = initWeights
            options.data = try dataOptions.location().provenanceLabel
            if let foldsFile {
                // before the data loads (every image is decoded with --skip-unreadable): a fold
                // the file lacks would otherwise be found only then
                let f = try Folds.read(from: URL(fileURLWithPath: foldsFile), expectedCount: folds)
                guard !f.ids(inFold: fold).isEmpty else {
                    let present = Set(f.fold.values).sorted().map(String.init).joined(separator: ", ")
                    throw ValidationError("--fold \(fold) has no patients in \(foldsFile); expected one of its folds: \(present)")
                }
            }
            outURL = URL(fileURLWithPath: out ?? "runs/" + TrainingSetup.runName(canonical: options.config, fold: fold, seed: seed))
            if !resume, Trainer.latestCheckpoint(in: outURL) != nil {
                throw ValidationError("\(outURL.path) already holds a run; continue it with --resume, or choose another -o/--output")
            }
        }
        var setup: TrainingSetup
        if var r = resumed {
            r.options = options
            // limits and skipping are the run's own; naming other ones is refused by makeTrainer
            if let trainLimit { r.limitTrain = trainLimit }
            if let validationLimit { r.limitValidation = validationLimit }
            if dataOptions.skipUnreadable { r.skipProblemImages = true }
            if let foldsFile { r.foldsFile = URL(fileURLWithPath: foldsFile) }
            setup = r
        } else {
            setup = TrainingSetup(options: options, data: try dataOptions.location(), runDirectory: outURL)
            setup.skipProblemImages = dataOptions.skipUnreadable
            setup.limitTrain = trainLimit
            setup.limitValidation = validationLimit
            setup.foldsFile = foldsFile.map { URL(fileURLWithPath: $0) }
            if resume, let saved = try TrainingSetup.savedOptions(in: outURL), saved.dataRoot != nil || saved.labelsPath != nil {
                // data named again on resume: the run's own limits unless named now
                if trainLimit == nil { setup.limitTrain = saved.limitTrain }
                if validationLimit == nil { setup.limitValidation = saved.limitValidation }
                if !dataOptions.skipUnreadable { setup.skipProblemImages = saved.skipProblemImages ?? false }
                if foldsFile == nil { setup.foldsFile = saved.foldsFile.map { URL(fileURLWithPath: $0) } }
            }
        }
        setup.workers = workers
        setup.group = group
        if resume, Trainer.latestCheckpoint(in: outURL) == nil {
            // nothing to continue from: a run killed before its first checkpoint starts again,
            // but a folder whose log records epochs has lost its checkpoints; never start over on it
            let log = outURL.appendingPathComponent("log.jsonl")
            if let epochs = try? EpochLog.read(log), !epochs.isEmpty {
                throw RunError.incompatible(
                    "--resume: \(outURL.path) has no checkpoint to continue from (checkpoints/ holds none) although log.jsonl records \(epochs.count) epoch\(epochs.count == 1 ? "" : "s"); it was not changed. Start a new run in another -o/--output"
                )
            }
            note("note: \(outURL.path) has no checkpoint yet; --resume starts the run from its first epoch")
        }
        let progress = TrainingProgress(quiet: runtime.quiet)
        let (trainer, summary): (Trainer, TrainingSetup.Summary)
        do {
            (trainer, summary) = try setup.makeTrainer(registry: registry, resume: resume, observer: outputSilenced ? nil : progress)
        } catch let error as RunError {
            // another run writes this folder: a usage error, like the other refusals of -o/--output
            // (new-user trial: it exited 1); the message names the folder, the holder and the way on
            if case .locked = error { throw ValidationError(error.description) }
            throw error
        } catch {
            // more folds than the data has patients, known once the labels are read
            throw foldCountAsOption(error)
        }
        if resume, let lr, summary.resumedFrom != nil {
            trainer.setLearningRate(lr)
            if !outputSilenced { progress.write("learning rate set to \(lr) from here on\n") }
        }
        if options.freezeBatchNorm && options.encoderWeights == nil && options.initWeights == nil && summary.resumedFrom == nil && !outputSilenced {
            progress.write(
                "note: batch norm is frozen (the paper's setting for ImageNet-pretrained encoders) but the encoder starts from scratch; --freeze-bn off usually trains better then\n"
            )
        }
        say("run: \(outURL.path)")
        say("model: \(trainer.options.config)  (\(trainer.detector.parameterCount) parameters)")
        say(
            "data: \(shownData(setup.data)), fold \(trainer.options.fold)/\(trainer.options.folds): \(summary.trainImages) training, \(Wording.count(summary.validationImages, "validation image"))"
        )
        let skipped = summary.dataset.missingImages.count + summary.dataset.unreadableImages.count
        if skipped > 0 && group.isLeader {
            // as detect and submit report theirs: the count, and where the list is
            note("\(Wording.count(skipped, "image")) skipped, missing or unreadable (listed in \(outURL.appendingPathComponent("skipped.csv").path))")
        }
        // trial: a run started with --threads 1 and resumed with the default (all cores) ended
        // with other weights than the uninterrupted run, without a word (Training.md: exact
        // "with a fixed thread count")
        if resume, summary.resumedFrom != nil, group.isLeader,
            let ran = (try? EpochLog.read(outURL.appendingPathComponent("log.jsonl")))?.last?.threads, ran != Compute.threads
        {
            note(
                "note: the run trained with \(Wording.count(ran, "compute thread")) per process and resumes with \(Compute.threads); sums run in another order, so its weights will not be the bits of an uninterrupted run (--threads \(ran) resumes with the run's own)"
            )
        }
        // one line for processes, threads and kernels (the threads were said twice)
        say(distributedOptions.describe(group) + ", BLAS kernels: \(BLAS.kernels.active)")
        // the batch used: TrainingSetup's loader takes at most the fold's training images per
        // step (trial: `--batch 100` on 6 images said "batch: 100 images per step")
        let asked = trainer.options.batchSize, b = summary.batchSize, p = group.size
        let why = b < asked ? "--batch \(asked) is more than the fold's \(Wording.count(summary.trainImages, "training image"))" : "global batch, --batch"
        say(
            "batch: \(b) images per step in all (\(why)); per process \(b / p == (b + p - 1) / p ? "\(b / p)" : "\(b / p)-\((b + p - 1) / p)") x \(p) process\(p == 1 ? "" : "es")"
        )
        if validateOnly {
            guard summary.resumedFrom != nil else { throw ValidationError("--validate-only needs --resume and a run with a checkpoint") }
            let (v, m) = try trainer.validate(trainer.state.epoch)
            say(
                "validation: total \(v.total) focal \(v.focal) regression \(v.regression) global \(v.global.map { "\($0)" } ?? "-") metric \(m.best) threshold \(m.threshold) sweep \(m.sweep.map { "\($0[1])" }.joined(separator: ","))"
            )
            return
        }
        let interrupt = InterruptFlag()
        if group.isDistributed {
            let runner = SendableTrainer(trainer: trainer, group: group as? MPIProcessGroup)
            interrupt.onFirstSignal = { sig in Self.leaveAtOnce(signal: sig, trainer: runner.trainer, group: runner.group) }
            if group.isLeader && LaunchEnvironment.detect()?.launcher == "mpirun" {
                // mpirun's way of ending a job begins with SIGCONT: start the checkpoint then,
                // a second before SIGTERM (after a Ctrl-Z and fg it is merely one more checkpoint)
                interrupt.onContinue { CheckpointWriters.write { _ = try? runner.trainer.saveCheckpointNow() } }
            }
        }
        var steps = 0
        let limit = stopAfter
        trainer.shouldStop = {
            steps += 1
            // standard output's reader gone (`| head`): stop as after Ctrl-C, with a checkpoint
            return interrupt.isSet || StandardStreams.outputClosed || (limit.map { steps >= $0 } ?? false)
        }
        // the run folder's lock goes with the run, however it ends: under mpirun rank 0's
        // SIGCONT handler holds the trainer until the process exits, and with it the lock,
        // which left run.lock in a finished run's folder (trial: `mpirun -np 2 opacity train`)
        defer { trainer.lock = nil }
        do {
            let logs = try trainer.run()
            if logs.isEmpty, summary.resumedFrom != nil {
                // all the epochs were there (the early check passed it over: records repaired now)
                say(Self.alreadyFinished(out ?? outURL.path, state: trainer.state, epochs: epochs, untouched: false))
            } else if let best = trainer.state.bestEpoch {
                say("done: \(logs.count) epoch\(logs.count == 1 ? "" : "s") run; best epoch \(best) -> \(trainer.bestURL.path)")
            }
            if let c = CommunicationFigures.total(logs.compactMap(\.communication)) { say(c.summary) }
        } catch let e as RunError {
            if case .interrupted = e {
                // standard output's reader gone (`| head`): the hint goes to standard error
                if StandardStreams.outputClosed {
                    note((interrupt.isSet ? "" : "stopped: standard output was closed by its reader (e.g. `| head`); ") + e.description)
                    if !interrupt.isSet { throw ExitStatus.outputClosed.code }
                } else {
                    say(e.description)
                }
                throw (interrupt.signalNumber == SIGTERM ? ExitStatus.terminated : ExitStatus.interrupted).code
            }
            summary.before?.takeBack()
            throw e
        } catch {
            // a run that fails before its first checkpoint leaves no half-made run folder
            summary.before?.takeBack()
            throw Self.withSkipHint(error, skipping: setup.skipProblemImages)
        }
    }

    /// The usage error for limits or skipping other than those `saved` (the run's own) was
    /// started with, given with `--resume`; `nil` when every one given agrees with the run's.
    ///
    /// The message names each option given that differs, with its value, the run's own
    /// settings (the valid choice: what `--resume` keeps when they are left out) and the way on.
    func refusedWithResume(_ saved: TrainingOptions, run: String) -> ValidationError? {
        var given: [String] = []
        if let limit, (limitTrain == nil && limit != saved.limitTrain) || (limitVal == nil && limit != saved.limitValidation) {
            given.append("--limit \(limit)")
        }
        if let limitTrain, limitTrain != saved.limitTrain { given.append("--limit-train \(limitTrain)") }
        if let limitVal, limitVal != saved.limitValidation { given.append("--limit-val \(limitVal)") }
        if dataOptions.skipUnreadable && saved.skipProblemImages != true { given.append("--skip-unreadable") }
        guard !given.isEmpty else { return nil }
        var own = [saved.limitTrain.map { "--limit-train \($0)" }, saved.limitValidation.map { "--limit-val \($0)" }].compactMap { $0 }
        if saved.skipProblemImages == true { own.append("--skip-unreadable") }
        let started = own.isEmpty ? "no limits and without --skip-unreadable" : own.joined(separator: " ")
        let options = given.count == 1 ? given[0] : given.dropLast().joined(separator: ", ") + " and " + given.last!
        return ValidationError(
            "\(options) cannot be given with --resume: \(run) was started with \(started), and --resume continues with the run's own; "
                + "drop \(given.map { $0.split(separator: " ")[0] }.joined(separator: " and ")) to resume it, or start a new run with another -o/--output")
    }

    /// The usage error for recipe options given with `--resume` that differ from the run's own
    /// (`--batch`, `--seed`, `--aug`, `--freeze-bn`, `--clip`, `--patience`, `--factor`,
    /// `--best-by`, `--fold`, `--folds`, `--encoder-weights`, `--init-weights`); `nil` when
    /// none does.
    ///
    /// `--resume` continues with the recipe saved in `options.json`, so a value typed with it
    /// would otherwise be dropped without a word (new-user trial: `--resume --batch 8 --seed 9
    /// --aug light` trained on with batch 4, seed 1234 and heavy augmentation). An option counts
    /// as given whenever it is on the command line, even at its default value (the options are
    /// optionals, `nil` is "not given", or GivenChoice values), so `--batch 4` on a run with batch 8 is refused too.
    /// `--lr` and `--epochs` are not refused: they change the run from the checkpoint on, as
    /// their help says (`--lr` at its default value included).
    func recipeChangedOnResume(_ saved: TrainingOptions, run: String) -> ValidationError? {
        var given: [String] = [], own: [String] = []
        // an option given (not nil) with a value other than the run's, even the default's
        // (new-user trial: `--resume --batch 4` on a run with batch 8 went on with 8 without a word)
        func check<T: Equatable>(_ option: String, _ value: T?, _ saved: T, _ show: (T) -> String) {
            guard let value, value != saved else { return }
            given.append("\(option) \(show(value))")
            own.append("\(option) \(show(saved))")
        }
        let onOff: (Bool) -> String = { $0 ? "on" : "off" }
        check("--batch", givenBatch, saved.batchSize) { "\($0)" }
        check("--seed", givenSeed, saved.seed) { "\($0)" }
        check("--aug", givenAug, saved.augmentation) { $0 }
        check("--freeze-bn", givenFreezeBn.given?.isOn, saved.freezeBatchNorm, onOff)
        check("--clip", givenClip, saved.clipNorm) { "\($0)" }
        check("--patience", givenPatience, saved.plateauPatience) { "\($0)" }
        check("--factor", givenFactor, saved.plateauFactor) { "\($0)" }
        check("--best-by", givenBestBy.given?.rawValue, saved.bestBy) { $0 }
        check("--fold", givenFold, saved.fold) { "\($0)" }
        check("--folds", givenFolds, saved.folds) { "\($0)" }
        check("--encoder-weights", encoderWeights.map { Optional($0) }, saved.encoderWeights) { $0 ?? "(none)" }
        check("--init-weights", initWeights.map { Optional($0) }, saved.initWeights) { $0 ?? "(none)" }
        guard !given.isEmpty else { return nil }
        let list = given.count == 1 ? given[0] : given.dropLast().joined(separator: ", ") + " and " + given.last!
        return ValidationError(
            "\(list) cannot be given with --resume: \(run) was started with \(own.joined(separator: " ")), and --resume continues with the run's own recipe; "
                + "drop \(given.map { $0.split(separator: " ")[0] }.joined(separator: " and ")) to resume it, or start a new run with another -o/--output")
    }

    /// An image that cannot be read, met while training without `--skip-unreadable`, with the
    /// hint `detect` gives (other errors as they are).
    static func withSkipHint(_ error: Error, skipping: Bool) -> Error {
        guard !skipping, let e = error as? DataError else { return error }
        switch e {
        case .malformedDICOM, .unsupportedTransferSyntax, .unsupportedPixelFormat, .jpegDecodingFailed, .pngFailed, .unknownImageFormat,
            .unreadableFile, .missingFile:
            return WithHint(e, "to leave out the images that cannot be read and go on, add --skip-unreadable (they are listed in skipped.csv in the run folder)")
        default: return error
        }
    }

    /// A signal in a distributed run: every rank ends at once, rank 0 after writing the
    /// checkpoint of the last completed step (``Trainer/saveCheckpointNow()``), the others
    /// when rank 0 says it is done (at most 30 s later). The step in flight is not finished
    /// as in one process: `mpirun` turns its own Ctrl-C or SIGTERM into SIGTERM for every
    /// rank and SIGKILL one second later, and it kills every rank as soon as one has exited.
    /// The exit status is 128 + the signal.
    static func leaveAtOnce(signal sig: Int32, trainer: Trainer, group: MPIProcessGroup?) -> Never {
        if let group, !group.isLeader {
            // this rank's step in flight is dropped: leave the cores to rank 0's checkpoint
            Self.lowerPriority(ofAllThreadsBut: [])
            _ = group.awaitLeaving(timeout: 30)
            _exit(128 + sig)
        }
        // the training threads compute a step that is dropped: the writers get the CPU first
        Self.lowerPriority(ofAllThreadsBut: CheckpointWriters.threads.union(currentThreadID().map { [$0] } ?? []))
        let name = sig == SIGTERM ? "SIGTERM" : "Ctrl-C"
        let t0 = Date()
        var text: String
        do {
            switch try trainer.saveCheckpointNow() {
            case let (url, true)?:
                text = String(
                    format: "%@: stopping all ranks; wrote %@ in %.2f s (the run after its last completed step; the step in flight is dropped); --resume continues from it",
                    name, url.path, Date().timeIntervalSince(t0))
            case let (url, false)?:
                text = "\(name): stopping all ranks; \(url.path) already holds the last completed step; --resume continues from it"
            case nil:
                text = "\(name): stopping all ranks; no step was completed, nothing to save"
            }
        } catch {
            text = "\(name): stopping all ranks; the checkpoint could not be written (\(error)); --resume continues from the previous one"
        }
        StandardStreams.writeError("\n" + rankPrefix + text + "\n")
        fflush(nil)
        group?.announceLeaving()
        _exit(128 + sig)
    }
}

extension TrainCommand {
    /// Where the newest checkpoint of a run folder stands when it ends an epoch and the
    /// folder's records agree with it (log.jsonl ends with that epoch, best.opb exists);
    /// `nil` when there is none, it stops in the middle of an epoch, it cannot be read, or a
    /// kill left the records behind it: resuming then goes on as usual (it repairs the
    /// records, or reports the checkpoint).
    static func finishedEpochs(in runDirectory: URL) -> TrainerState? {
        guard let url = Trainer.latestCheckpoint(in: runDirectory),
            let state = try? BundleReader(url).info.metadata.extra(BundleCheckpointStore.trainerKey, as: TrainerState.self), state.step == 0,
            let log = try? EpochLog.read(runDirectory.appendingPathComponent("log.jsonl")), log.last?.epoch == state.epoch,
            state.bestEpoch == nil || FileManager.default.fileExists(atPath: runDirectory.appendingPathComponent("best.opb").path)
        else { return nil }
        return state
    }

    /// What `--resume` says about a run that has all the epochs asked for: how many it has,
    /// its best epoch, and the command that trains it further (`--epochs`, more than it has).
    /// - Parameters:
    ///   - out: the run folder as given with -o/--output.
    ///   - state: its newest checkpoint's state (``finishedEpochs(in:)``).
    ///   - epochs: `--epochs` if given.
    ///   - untouched: whether the run folder was left as it was (nothing loaded or written).
    static func alreadyFinished(_ out: String, state: TrainerState, epochs: Int?, untouched: Bool = true) -> String {
        let n = state.epoch
        let plural = n == 1 ? "" : "s"
        var text =
            epochs.map { $0 < n ? "\(out) has already run \(n) epoch\(plural), more than --epochs \($0)" : "\(out) has already finished its \(n) epoch\(plural)" }
            ?? "\(out) has already finished its \(n) epoch\(plural)"
        if let best = state.bestEpoch {
            text += " (best epoch \(best): \(URL(fileURLWithPath: out).appendingPathComponent("best.opb").path))"
        }
        text +=
            "; nothing to train" + (untouched ? ", nothing changed" : "")
            + ". To train it further, resume it with more epochs than \(n): opacity train -o \(shellWord(out)) --resume --epochs \(2 * n)"
        return text
    }

    /// Where the newest checkpoint of a run folder stands when the run stopped in the middle
    /// of an epoch (`checkpoints/interrupted.opb`, `step` > 0); `nil` otherwise.
    static func stoppedInEpoch(in runDirectory: URL) -> TrainerState? {
        guard let url = Trainer.latestCheckpoint(in: runDirectory),
            let state = try? BundleReader(url).info.metadata.extra(BundleCheckpointStore.trainerKey, as: TrainerState.self), state.step > 0
        else { return nil }
        return state
    }

    /// What `--resume --epochs N` says about a run stopped in the middle of an epoch that has
    /// already run N epochs or more: where it stopped, that nothing changed, and how to continue.
    /// - Parameters:
    ///   - out: the run folder as given with -o/--output.
    ///   - state: its newest checkpoint's state (``stoppedInEpoch(in:)``).
    ///   - epochs: `--epochs` as given.
    ///   - planned: the epochs the run's options.json names.
    static func stoppedBeyond(_ out: String, state: TrainerState, epochs: Int, planned: Int) -> String {
        let n = state.epoch
        let onward =
            planned > n
            ? "opacity train -o \(shellWord(out)) --resume (to its \(planned) epochs), or with --epochs above \(n)"
            : "opacity train -o \(shellWord(out)) --resume --epochs \(2 * max(n, 1))"
        let of = planned > n ? " of its \(planned)" : ""
        return "\(out) stopped \(Wording.count(state.step, "step")) into epoch \(n + 1)\(of); --epochs \(epochs) asks for no more than the "
            + "\(Wording.count(n, "epoch")) it has run: nothing to train, nothing changed. To continue it: \(onward)"
    }

    /// `s` as one shell word (single-quoted when it holds anything but letters, digits and `-_./+,:=@%`).
    static func shellWord(_ s: String) -> String {
        let plain = !s.isEmpty && s.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "-_./+,:=@%".unicodeScalars.contains($0) }
        return plain ? s : "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The calling thread's id (Linux; `nil` elsewhere).
    static func currentThreadID() -> pid_t? {
        #if os(Linux)
            // /proc/thread-self links to PID/task/TID
            return (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")).flatMap {
                pid_t($0.split(separator: "/").last ?? "")
            }
        #else
            return nil
        #endif
    }

    /// Sets the threads of this process but those in `keep` (thread ids) to the lowest priority
    /// (nice 19; on Linux a thread's nice value is its own).
    static func lowerPriority(ofAllThreadsBut keep: Set<pid_t>) {
        #if os(Linux)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? [] {
                guard let tid = pid_t(name), !keep.contains(tid) else { continue }
                _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(tid), 19)
            }
        #endif
    }
}

/// The threads writing rank 0's checkpoint while the job ends (kept at normal priority).
enum CheckpointWriters {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var running: Set<pid_t> = []

    static var threads: Set<pid_t> { lock.withLock { running } }

    /// Runs `body` on the calling thread, counted as a writer meanwhile.
    static func write(_ body: () -> Void) {
        let tid = TrainCommand.currentThreadID()
        if let tid { lock.withLock { _ = running.insert(tid) } }
        defer { if let tid { lock.withLock { _ = running.remove(tid) } } }
        body()
    }
}

/// The trainer, handed to the signal handler's thread: it only calls
/// ``Trainer/saveCheckpointNow()``, which is safe to call while training runs.
private struct SendableTrainer: @unchecked Sendable {
    let trainer: Trainer
    let group: MPIProcessGroup?
}
