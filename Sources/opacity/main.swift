// The stock `opacity` command line: every command, with the built-in plugins.
import OpacityCLI

OpacityMain.run(plugins: builtinPlugins)
