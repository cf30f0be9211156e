import Foundation
import Testing

@testable import ctd

struct PrivilegeDropTests {
    @Test func account_whenUserExists_hasItsGroups() throws {
        let root = try PrivilegeDrop.account("root")
        #expect(root.uid == 0 && root.gid == 0)
        #expect(root.groups.contains(0))
    }

    @Test func account_whenUserMissing_saysHowToGoOn() {
        #expect {
            _ = try PrivilegeDrop.account("ctd-no-such-user-\(getpid())")
        } throws: { error in
            let m = (error as? DaemonConfig.Error)?.message ?? ""
            return m.contains("there is no user") && m.contains("--keep-privileges")
        }
    }

    @Test func dropIfRoot_withoutUserOrWhenKept_doesNothing() throws {
        try PrivilegeDrop.dropIfRoot(to: nil, keep: false)
        try PrivilegeDrop.dropIfRoot(to: "", keep: false)
        try PrivilegeDrop.dropIfRoot(to: "nobody", keep: true)
        try PrivilegeDrop.dropIfRoot(to: "root", keep: false)
    }

    @Test func parse_serviceUser() throws {
        #expect(try DaemonConfig.parse("[service]\nuser = \"ctd\"\n").serviceUser == "ctd")
        #expect(try DaemonConfig.parse("").serviceUser == "")
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[service]\ngroup = \"x\"\n") }
    }
}
