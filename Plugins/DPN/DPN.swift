import OpacityCore
import OpacityTensor

/// Registers the DPN encoders (not yet implemented: registers nothing).
public enum DPNPlugin: OpacityPlugin {
    public static let name = "DPN"
    public static func register(into registry: inout Registry) throws {}
}
