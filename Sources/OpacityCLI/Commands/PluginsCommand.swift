import ArgumentParser
import Foundation
import Opacity

/// `opacity plugins`: every registered component with its parameters and defaults.
struct PluginsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract: "List every registered encoder, neck, head and detector with its parameters and defaults.",
        discussion: """
            Names listed here can be used in config strings, e.g.
              retinanet(encoder=seresnext50_32x4d, levels=3-7, neck=fpn(channels=128))

            Pass --canonical CONFIG to check a config string and print its canonical form.
            """)

    @Option(name: .long, help: "Only this kind.")
    var kind: ComponentKind?

    @Option(name: .long, help: "Check a config string and print its canonical form (defaults elided, keys sorted).")
    var canonical: String?

    @OptionGroup var pluginOptions: PluginOptions

    func run() throws {
        let registry = try pluginOptions.registry()
        if let canonical {
            // an error in it is a usage error (64), as in train's --config
            say(try commandLineConfig(canonical, option: "--canonical", registry: registry))
            return
        }
        var kinds = ComponentKind.allCases
        if let kind { kinds = [kind] }
        say("plugins: \(registry.plugins.joined(separator: ", "))")
        for k in kinds {
            let items = registry.components.filter { $0.kind == k }
            guard !items.isEmpty else { continue }
            say("\n\(k.rawValue)s:")
            for info in items {
                say("  \(info.key)  [\(info.plugin)]  \(info.summary)")
                for p in info.parameters {
                    let def = "\(p.name)=\(p.defaultValue)"
                    say("      \(def.padding(toLength: max(def.count, 28), withPad: " ", startingAt: 0))  \(p.kind)  \(p.summary)")
                }
            }
        }
    }
}
