/// Every procedure ctd serves: the single source of truth for dispatch, roles and introspection.
enum MethodTable {
    static let all: [Procedure] = [
        .login, .logout, .view, .kill, .change, .refresh, .setAutorefresh, .status, .auditList, .auditVerify,
        .summary, .stats, .killPreview, .killMatching, .changes,
        .listMethods, .methodHelp, .methodSignature, .multicall,
    ]

    static let byName: [String: Procedure] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
}
