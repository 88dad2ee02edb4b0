import OpacityCore
import OpacityTensor

/// Registers the SEResNeXt encoders (not yet implemented: registers nothing).
public enum SEResNeXtPlugin: OpacityPlugin {
    public static let name = "SEResNeXt"
    public static func register(into registry: inout Registry) throws {}
}
