import Foundation
import Testing

@testable import ctd

struct DaemonConfigTests {
    @Test func parse_whenSampleConfig_loadsDefaults() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../ctd.sample.toml")
        let c = try DaemonConfig.load(path: url.standardized.path)
        #expect(c.port == 4040)
        #expect(c.idleTimeout == 10)
        #expect(c.core.maxPageLength == 150)
        #expect(c.hide == ["127.0.0.0/8", "::1/128"])
        #expect(c.pluginSections["AuthSHA"]?["password_file"] == .string("/etc/ctd/passwd"))
    }

    @Test func parse_whenUnknownKey_namesIt() {
        #expect {
            try DaemonConfig.parse("[server]\nprot = 1\n")
        } throws: { ($0 as? DaemonConfig.Error)?.message.contains("'prot'") == true }
        #expect {
            try DaemonConfig.parse("[serveur]\n")
        } throws: { ($0 as? DaemonConfig.Error)?.message.contains("'serveur'") == true }
    }

    @Test func parse_whenValueOutOfRangeOrWrongType_fails() {
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[server]\nport = 70000\n") }
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[server]\nport = \"80\"\n") }
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[conntrack]\nhide = [\"10.0.0.0/33\"]\n") }
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[server]\ntls_certificate = \"/x\"\n") }
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[server\n") }
    }

    @Test func parse_whenPluginSections_keepsThemForPlugins() throws {
        let c = try DaemonConfig.parse(
            "[plugins]\nauth = \"AuthPAM\"\nenable = [\"UIDResolver\"]\n[plugin.UIDResolver]\nmask = 0xFFFF\n")
        #expect(c.authenticator == "AuthPAM")
        #expect(c.plugins == ["UIDResolver"])
        #expect(c.pluginSections["UIDResolver"]?["mask"] == .integer(0xFFFF))
    }
}

struct ConnectionLimitConfigTests {
    @Test func parse_whenSampleConfig_hasTheConnectionDefaults() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../ctd.sample.toml")
        let c = try DaemonConfig.load(path: url.standardized.path)
        #expect(c.maxConnections == 512 && c.maxConnectionsPerAddress == 64)
        #expect(c.headerTimeout == 10 && c.bodyTimeout == 30 && c.connectionIdleTimeout == 60)
        #expect(c.allowedOrigins.isEmpty && c.serverNames == nil)
    }

    @Test func parse_whenConnectionSettingsGiven_readsThemStrictly() throws {
        let c = try DaemonConfig.parse(
            """
            [server]
            max_connections = 100
            max_connections_per_address = 3
            header_timeout = 2.5
            body_timeout = 4
            idle_timeout = 5
            allowed_origins = ["https://console.example:8443"]
            server_names = ["ctd.example", "::1", "proxy.example:443"]
            """)
        #expect(c.maxConnections == 100 && c.maxConnectionsPerAddress == 3)
        #expect(c.headerTimeout == 2.5 && c.bodyTimeout == 4 && c.connectionIdleTimeout == 5)
        #expect(c.allowedOrigins == ["https://console.example:8443"])
        #expect(c.serverNames == ["ctd.example", "::1", "proxy.example:443"])
        for bad in [
            "max_connections = 0", "max_connections_per_address = \"4\"", "header_timeout = 0",
            "max_connections = 10\nmax_connections_per_address = 11", "allowed_origins = [\"console.example\"]",
            "allowed_origins = [\"https://a/b\"]", "allowed_origins = \"https://a\"", "server_names = [\"a b\"]",
            "server_names = [1]",
        ] {
            #expect(throws: DaemonConfig.Error.self, "\(bad)") { try DaemonConfig.parse("[server]\n\(bad)\n") }
        }
    }
}

struct LoginThrottleConfigTests {
    @Test func parse_whenThrottleSettingsGiven_readsThem() throws {
        let c = try DaemonConfig.parse("[sessions]\nlogin_failure_limit = 0\nlogin_failure_window = 5\n")
        #expect(c.core.loginFailureLimit == 0 && c.core.loginFailureWindow == 5)
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[sessions]\nlogin_failure_limit = -1\n") }
    }
}

struct PluginOptionTests {
    @Test func parse_whenNameKeyValue_readsTheValueAsTOMLWould() throws {
        let (plugin, key, value) = try PluginOptions.parse(pluginSetting: "AuditSQLite.busy_timeout=250")
        #expect(plugin == "AuditSQLite" && key == "busy_timeout" && value == .integer(250))
        #expect(try PluginOptions.parse(pluginSetting: "X.on=true").2 == .bool(true))
        #expect(
            try PluginOptions.parse(pluginSetting: "X.path=/var/lib/ctd/a=b.db").2 == .string("/var/lib/ctd/a=b.db"))
    }

    @Test func parse_whenNoDotOrNoEquals_isAUsageError() {
        for bad in ["nodot=1", "X.key", ".key=1", "X.=1"] {
            #expect(throws: (any Error).self) { try PluginOptions.parse(pluginSetting: bad) }
        }
    }
}
