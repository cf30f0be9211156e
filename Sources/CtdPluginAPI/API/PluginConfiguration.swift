/// A configuration value, as read from the config file (TOML) or the command line.
public enum ConfigValue: Sendable, Equatable {
    /// A string.
    case string(String)
    /// An integer.
    case integer(Int64)
    /// A floating-point number.
    case double(Double)
    /// A boolean.
    case bool(Bool)
    /// An array of values.
    case array([ConfigValue])
    /// A nested table.
    case table([String: ConfigValue])
}

/// A plugin's own section of the config file (`[plugin.NAME]`), with strict, typed accessors.
///
/// Call ``expectOnly(_:)`` first so that a misspelt key is an error instead of a silently ignored setting.
/// Thread-safety: a value type; safe to share.
public struct PluginConfiguration: Sendable, Equatable {
    /// The plugin's name, used in error messages.
    public var pluginName: String
    /// The raw key/value pairs.
    public var values: [String: ConfigValue]

    /// Creates a configuration.
    /// - Parameters:
    ///   - pluginName: the plugin the section belongs to.
    ///   - values: the section's keys and values.
    public init(pluginName: String, values: [String: ConfigValue] = [:]) {
        self.pluginName = pluginName
        self.values = values
    }

    /// Fails on the first key (in sorted order) that is not in `allowed`.
    /// - Parameter allowed: every key the plugin understands.
    /// - Throws: ``PluginError/unknownKey(_:plugin:)``.
    public func expectOnly(_ allowed: Set<String>) throws {
        for key in values.keys.sorted() where !allowed.contains(key) {
            throw PluginError.unknownKey(key, plugin: pluginName)
        }
    }

    /// A string value.
    /// - Parameters:
    ///   - key: the key.
    ///   - defaultValue: returned when the key is absent.
    /// - Throws: ``PluginError`` when the value is not a string.
    public func string(_ key: String, default defaultValue: String? = nil) throws -> String? {
        guard let value = values[key] else { return defaultValue }
        guard case .string(let s) = value else { throw typeError(key, "a string") }
        return s
    }

    /// An integer value.
    /// - Parameters:
    ///   - key: the key.
    ///   - defaultValue: returned when the key is absent.
    /// - Throws: ``PluginError`` when the value is not an integer.
    public func integer(_ key: String, default defaultValue: Int64? = nil) throws -> Int64? {
        guard let value = values[key] else { return defaultValue }
        guard case .integer(let i) = value else { throw typeError(key, "an integer") }
        return i
    }

    /// A number (integer or floating point) as a `Double`.
    /// - Parameters:
    ///   - key: the key.
    ///   - defaultValue: returned when the key is absent.
    /// - Throws: ``PluginError`` when the value is not a number.
    public func double(_ key: String, default defaultValue: Double? = nil) throws -> Double? {
        guard let value = values[key] else { return defaultValue }
        switch value {
        case .double(let d): return d
        case .integer(let i): return Double(i)
        default: throw typeError(key, "a number")
        }
    }

    /// A boolean value.
    /// - Parameters:
    ///   - key: the key.
    ///   - defaultValue: returned when the key is absent.
    /// - Throws: ``PluginError`` when the value is not a boolean.
    public func bool(_ key: String, default defaultValue: Bool? = nil) throws -> Bool? {
        guard let value = values[key] else { return defaultValue }
        guard case .bool(let b) = value else { throw typeError(key, "true or false") }
        return b
    }

    /// An array of strings.
    /// - Parameters:
    ///   - key: the key.
    ///   - defaultValue: returned when the key is absent.
    /// - Throws: ``PluginError`` when the value is not an array of strings.
    public func strings(_ key: String, default defaultValue: [String]? = nil) throws -> [String]? {
        guard let value = values[key] else { return defaultValue }
        guard case .array(let items) = value else { throw typeError(key, "an array of strings") }
        return try items.map { item in
            guard case .string(let s) = item else { throw typeError(key, "an array of strings") }
            return s
        }
    }

    private func typeError(_ key: String, _ expected: String) -> PluginError {
        PluginError("key '\(key)' in the configuration of plugin \(pluginName) must be \(expected)")
    }
}
