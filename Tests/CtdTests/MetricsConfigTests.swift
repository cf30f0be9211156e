import Testing

@testable import ctd

struct MetricsConfigTests {
    @Test func parse_whenNoMetricsSection_isOff() throws {
        #expect(try DaemonConfig.parse("[server]\nport = 1\n").metricsListen == nil)
    }

    @Test func parse_whenSampleConfig_listensOnLoopback4041() throws {
        let c = try DaemonConfig.parse("[metrics]\nlisten = \"127.0.0.1:4041\"\nmax_connections = 8\n")
        #expect(c.metricsListen == DaemonConfig.MetricsAddress(host: "127.0.0.1", port: 4041))
        #expect(c.metricsMaxConnections == 8)
    }

    @Test func metricsAddress_whenIPv6InBrackets_keepsTheHostBare() throws {
        let a = try DaemonConfig.MetricsAddress.parse("[::1]:9100", source: "t")
        #expect(a == DaemonConfig.MetricsAddress(host: "::1", port: 9100))
        #expect(a?.description == "[::1]:9100")
    }

    @Test func metricsAddress_whenOffOrEmpty_isNil() throws {
        #expect(try DaemonConfig.MetricsAddress.parse("off", source: "t") == nil)
        #expect(try DaemonConfig.MetricsAddress.parse("OFF", source: "t") == nil)
        #expect(try DaemonConfig.MetricsAddress.parse("", source: "t") == nil)
    }

    @Test func metricsAddress_whenMalformed_failsWithASentence() {
        for bad in ["127.0.0.1", "127.0.0.1:", ":4041", "::1:4041", "[::1]4041", "host:70000", "a b:1", "x:-1"] {
            #expect {
                try DaemonConfig.MetricsAddress.parse(bad, source: "--metrics-listen")
            } throws: { error in
                (error as? DaemonConfig.Error)?.message.hasPrefix("--metrics-listen must be host:port") == true
            }
        }
    }

    @Test func parse_whenUnknownMetricsKey_namesIt() {
        #expect {
            try DaemonConfig.parse("[metrics]\nport = 1\n")
        } throws: { ($0 as? DaemonConfig.Error)?.message.contains("'port'") == true }
    }

    @Test func exporter_rendersEveryFamilyWithHelp() throws {
        let exporter = MetricsExporter()
        let text = String(decoding: exporter.render(), as: UTF8.self)
        // Nothing attached yet: an empty document is still valid exposition text.
        #expect(!text.contains("ctd_conntrack_entries"))
        for name in MetricFamilies.help.keys {
            #expect(name.hasPrefix("ctd_"))
            #expect(!(MetricFamilies.help[name] ?? "").isEmpty)
        }
        #expect(MetricFamilies.help["ctd_conntrack_stat_early_drop_total"] != nil)
    }

    @Test func connectionLabels_areBounded() {
        let sets = MetricFamilies.connectionLabelSets
        #expect(Set(sets.map { "\($0.0)/\($0.1)" }).count == sets.count)
        #expect(sets.count < 32)
        #expect(MetricFamilies.l4protoLabel(253) == "other")
        #expect(MetricFamilies.l4protoLabel(17) == "udp")
    }
}
