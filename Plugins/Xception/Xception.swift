import OpacityCore
import OpacityTensor

/// Registers the Xception encoders (not yet implemented: registers nothing).
public enum XceptionPlugin: OpacityPlugin {
    public static let name = "Xception"
    public static func register(into registry: inout Registry) throws {}
}
