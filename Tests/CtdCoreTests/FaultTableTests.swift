import Foundation
import Testing
import XMLRPC

@testable import CtdCore

/// The README's fault table is the contract with frontends: it must list exactly the codes the server can send.
struct FaultTableTests {
    /// `| code | meaning |` rows of the README's "Fault codes" section.
    static func readmeCodes() throws -> [Int] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try #require(readme.components(separatedBy: "## Fault codes").dropFirst().first)
        let table = section.components(separatedBy: "\n## ").first ?? section
        return table.split(separator: "\n").compactMap { line in
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            return cells.first.flatMap { Int($0) }
        }
    }

    @Test func readme_listsEveryApplicationFaultAndProtocolCode_andNothingElse() throws {
        let protocolCodes = [
            Fault.parseError("").code, Fault.invalidRequest("").code, Fault.methodNotFound("").code,
            Fault.invalidParams("").code, Fault.internalError.code, Fault.requestTooLarge(limit: 1).code,
            Fault.nestingTooDeep(limit: 1).code, Fault.responseTooLarge(limit: 1).code,
        ]
        let expected = Set(protocolCodes + ApplicationFault.allCases.map(\.rawValue))
        let listed = try Self.readmeCodes()
        #expect(Set(listed) == expected)
        #expect(listed.count == expected.count, "a code is listed twice")
    }

    @Test func applicationFaults_arePositiveAndDistinctFromTheProtocolRange() {
        for fault in ApplicationFault.allCases { #expect(fault.rawValue > 0) }
        #expect(Fault.shuttingDown.code == ApplicationFault.shuttingDown.rawValue)
    }
}
