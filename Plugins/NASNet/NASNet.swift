import OpacityCore
import OpacityTensor

/// Registers the NASNet encoders (not yet implemented: registers nothing).
public enum NASNetPlugin: OpacityPlugin {
    public static let name = "NASNet"
    public static func register(into registry: inout Registry) throws {}
}
