import Conntrack
import ConntrackQuery
import CtdPluginAPI

/// A session's scope (``Scope``), applied on the server to every procedure that reads or acts on connections.
///
/// `own` means: only the connections whose resolved `username` (UIDResolver, from the uid in the mark) is the
/// session's user. Without a resolver that provides `username`, a scoped session sees nothing (fail closed).
enum Scoping {
    static let field = "username"

    /// The filter a scoped session's queries carry, or nil for an unscoped one.
    static func filter(for session: Session) -> FlowQuery.Filter? {
        switch session.identity.scope {
        case .all: return nil
        case .own: return .resolved(field, anyOf: [.string(session.identity.user)])
        @unknown default: return .resolved(field, anyOf: [])
        }
    }

    /// `query` restricted to what `session` may see.
    static func restrict(_ query: FlowQuery, to session: Session) -> FlowQuery {
        guard let filter = filter(for: session) else { return query }
        var q = query
        q.filters.append(filter)
        return q
    }

    /// How many entries of `snapshot` `session` may see: all of them, or for a scoped session its own.
    static func visibleCount(_ session: Session, _ snapshot: MirrorSnapshot, _ context: ServerContext) -> Int {
        guard filter(for: session) != nil else { return snapshot.flows.count }
        let query = restrict(FlowQuery(filters: [], orderField: nil, direction: .ascending, start: 0, length: 0), to: session)
        let resolve = context.plugins.resolvers.isEmpty ? nil : context.resolvedFields.resolver()
        return query.run(on: snapshot.flows, indexes: snapshot.indexes, now: context.clock.now(), resolve: resolve).total
    }

    /// Whether `session` may see and act on `flow`.
    static func allows(_ session: Session, _ flow: Flow, _ context: ServerContext) -> Bool {
        switch session.identity.scope {
        case .all: return true
        case .own:
            guard case .string(let name)? = context.resolvedFields.values(mark: flow.mark)[field] else { return false }
            return name == session.identity.user
        @unknown default: return false
        }
    }
}
