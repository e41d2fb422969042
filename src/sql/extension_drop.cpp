// DROP EXTENSION logical_audit: what lives outside the extension's own objects goes with it. Just
// before logical_audit.subscription is dropped (an object access hook sees it, however the drop
// came: DROP EXTENSION, DROP SCHEMA ... CASCADE), every subscription's worker is stopped, its
// replication origin dropped and its spool files removed once the transaction commits; a WARNING
// names the upstream slots that remain, which only their upstream can drop. A later CREATE
// EXTENSION then starts clean, and new subscription ids never meet a leftover.
#include "sql/extension_drop.hpp"

#include <cstring>

#include "audit/spool.hpp"
#include "worker/shmem.hpp"
#include "worker/worker.hpp"

#include "pg.hpp"

namespace logical_audit {

namespace {

object_access_hook_type previous_hook = nullptr;

// A subscription being dropped with the extension (palloc'd).
struct DroppedSubscription {
	int id;
	char *name;
	char *slot_name;
	char *upstream; // host, port and dbname of its conninfo, never its password
};

// Whether a relation is the extension's subscription table.
bool is_subscription_table(Oid relid) {
	char *relname = get_rel_name(relid);
	if (relname == nullptr || strcmp(relname, "subscription") != 0)
		return false;
	char *nspname = get_namespace_name(get_rel_namespace(relid));
	Oid extension = get_extension_oid("logical_audit", true);
	return nspname != nullptr && strcmp(nspname, "logical_audit") == 0 && OidIsValid(extension) &&
	       getExtensionOfObject(RelationRelationId, relid) == extension;
}

// Where a conninfo leads, for a message: its host, port and dbname settings.
char *upstream_of(const char *conninfo) {
	StringInfoData out;
	initStringInfo(&out);
	PQconninfoOption *options = PQconninfoParse(conninfo, nullptr);
	for (PQconninfoOption *o = options; o != nullptr && o->keyword != nullptr; o++)
		if (o->val != nullptr && o->val[0] != '\0' &&
		    (strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0 ||
		     strcmp(o->keyword, "port") == 0 || strcmp(o->keyword, "dbname") == 0))
			appendStringInfo(&out, "%s%s=%s", out.len > 0 ? " " : "", o->keyword, o->val);
	if (options != nullptr)
		PQconninfoFree(options);
	return out.data;
}

// Reads every subscription, as the dropping statement's snapshot sees them, into the caller's
// memory (SPI's goes at SPI_finish).
DroppedSubscription *read_subscriptions(int *count) {
	MemoryContext caller = CurrentMemoryContext;
	SPI_connect();
	int rc =
	    SPI_execute("SELECT id, name, slot_name::text, conninfo FROM logical_audit.subscription ORDER BY id", true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read subscriptions: %s", SPI_result_code_string(rc));
	*count = static_cast<int>(SPI_processed);
	auto *subs =
	    static_cast<DroppedSubscription *>(MemoryContextAlloc(caller, sizeof(DroppedSubscription) * Max(*count, 1)));
	for (int i = 0; i < *count; i++) {
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool isnull;
		subs[i].id = DatumGetInt32(SPI_getbinval(row, desc, 1, &isnull));
		char *conninfo = SPI_getvalue(row, desc, 4);
		MemoryContext spi = MemoryContextSwitchTo(caller);
		subs[i].name = pstrdup(SPI_getvalue(row, desc, 2));
		subs[i].slot_name = pstrdup(SPI_getvalue(row, desc, 3));
		subs[i].upstream = upstream_of(conninfo);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return subs;
}

// Stops a subscription's worker, drops its origin and has its spool files removed at commit.
void release_subscription(const DroppedSubscription &sub) {
	worker::stop_worker(sub.id, sub.name);
	char origin[NAMEDATALEN];
	worker::origin_name(sub.id, origin);
	replorigin_drop_by_name(origin, true, false); // waits for a worker still exiting to let it go
	audit::spool_remove_subscription_at_commit(sub.id);
}

// Warns of the upstream slots that stay behind, each with where it is and how to drop it.
void warn_remaining_slots(const DroppedSubscription *subs, int count) {
	StringInfoData detail;
	initStringInfo(&detail);
	for (int i = 0; i < count; i++)
		appendStringInfo(&detail, "%sSlot \"%s\" of subscription \"%s\" on the upstream at %s.", i > 0 ? "\n" : "",
		                 subs[i].slot_name, subs[i].name, subs[i].upstream);
	ereport(WARNING, (errcode(ERRCODE_WARNING),
	                  errmsg_plural("%d replication slot of the dropped subscriptions remains upstream",
	                                "%d replication slots of the dropped subscriptions remain upstream", count, count),
	                  errdetail("%s", detail.data),
	                  errhint("An upstream keeps WAL for its slot until it is dropped there, with SELECT "
	                          "pg_drop_replication_slot('<slot name>').")));
}

// Releases what the subscriptions hold outside the extension, before their table goes.
void drop_subscriptions() {
	int count;
	DroppedSubscription *subs = read_subscriptions(&count);
	if (count > 0)
		worker::prevent_in_transaction_block("DROP EXTENSION logical_audit");
	for (int i = 0; i < count; i++)
		release_subscription(subs[i]);
	if (count > 0)
		warn_remaining_slots(subs, count);
}

// The object access hook: acts when the subscription table is about to be dropped.
void on_object_access(ObjectAccessType access, Oid class_id, Oid object_id, int sub_id, void *arg) {
	if (previous_hook != nullptr)
		previous_hook(access, class_id, object_id, sub_id, arg);
	if (access == OAT_DROP && class_id == RelationRelationId && sub_id == 0 && is_subscription_table(object_id))
		drop_subscriptions();
}

} // namespace

void install_extension_drop_hook() {
	previous_hook = object_access_hook;
	object_access_hook = on_object_access;
}

} // namespace logical_audit
