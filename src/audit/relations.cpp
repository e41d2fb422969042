// Upstream relations and types learnt from Relation and Type messages, and how each column's
// values (text or binary) convert to jsonb.
//
// Every decision that needs the catalogs (which local type, which conversion, which receive and
// output functions) is taken once, when the Relation message arrives; a row then costs only the
// input or receive functions of the columns whose kind needs one. Everything is palloc'd or a
// plain struct: an ERROR's longjmp abandons nothing.
#include "audit/relations.hpp"

#include "audit/binary_oids.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string_view>

#include "pg.hpp"

namespace logical_audit::audit {

namespace po = pgoutput;

// An upstream type's qualified name, from a Type message.
struct TypeName {
	Oid type_id; // hash key
	char *nspname;
	char *typname;
};

// A relation and the memory context that holds it (and its columns' function caches).
struct RelationEntry {
	Oid relation_id; // hash key
	AuditRelation *relation;
	MemoryContext context;
};

struct Relations {
	MemoryContext context;
	HTAB *relations; // upstream relation id -> RelationEntry
	HTAB *types;     // upstream type oid -> TypeName
};

namespace {

// A hash table keyed by an oid, with entries of the given size, living in context.
HTAB *create_oid_hash(const char *name, Size entry_size, MemoryContext context) {
	HASHCTL ctl;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = entry_size;
	ctl.hcxt = context;
	return hash_create(name, 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

// A NUL-terminated copy of a name from the stream, which must be valid in the database encoding
// (names become jsonb keys and SQL text).
char *copy_name(std::string_view s) {
	pg_verifymbstr(s.data(), static_cast<int>(s.size()), false);
	return pnstrdup(s.data(), s.size());
}

// A namespace name from the stream, where an empty one means pg_catalog.
char *copy_namespace(std::string_view s) {
	return copy_name(s.empty() ? std::string_view("pg_catalog") : s);
}

// The local type of that qualified name, or InvalidOid.
Oid type_by_name(const TypeName *name) {
	Oid nsp = get_namespace_oid(name->nspname, true);
	if (!OidIsValid(nsp))
		return InvalidOid;
	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, PointerGetDatum(name->typname), ObjectIdGetDatum(nsp));
}

// The downstream type of an upstream column type: by name when a Type message named it (user
// types, whose oids differ between servers; for a domain pgoutput names its base type), else the
// same oid for a built-in type. InvalidOid when there is none.
Oid find_local_type(const Relations *relations, Oid upstream) {
	auto *name = static_cast<TypeName *>(hash_search(relations->types, &upstream, HASH_FIND, nullptr));
	Oid local = InvalidOid;
	if (name)
		local = type_by_name(name);
	else if (upstream < FirstNormalObjectId && SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(upstream)))
		local = upstream;
	if (OidIsValid(local) && !get_typisdefined(local))
		return InvalidOid; // a shell type has no input function
	return local;
}

// Whether a user type has an explicit cast to json through a function, which to_jsonb uses.
bool has_json_cast(Oid type) {
	Oid cast_function = InvalidOid;
	CoercionPathType path = find_coercion_pathway(JSONOID, type, COERCION_EXPLICIT, &cast_function);
	return path == COERCION_PATH_FUNC && OidIsValid(cast_function);
}

// How to_jsonb renders a value of a (domain-free) local type; mirrors its categories, except that
// ranges go through to_jsonb too so that their timestamptz bounds follow the local TimeZone.
JsonKind kind_of(Oid base) {
	switch (base) {
	case BOOLOID:
		return JsonKind::Bool;
	case INT2OID:
	case INT4OID:
	case INT8OID:
		return JsonKind::Integer;
	case NUMERICOID:
		return JsonKind::Number;
	case FLOAT4OID:
	case FLOAT8OID:
		return JsonKind::Float;
	case DATEOID:
	case TIMESTAMPOID:
	case TIMESTAMPTZOID:
		return JsonKind::DateTime;
	case JSONOID:
	case JSONBOID:
		return JsonKind::Json;
	default:
		break;
	}
	if (OidIsValid(get_element_type(base)) || type_is_rowtype(base))
		return JsonKind::Generic;
	char typtype = get_typtype(base);
	if (typtype == TYPTYPE_RANGE || typtype == TYPTYPE_MULTIRANGE)
		return JsonKind::Generic;
	if (base >= FirstNormalObjectId && has_json_cast(base))
		return JsonKind::Generic;
	return JsonKind::String; // to_jsonb gives the output function's text, which the upstream sent
}

// Binds to_jsonb to the column's type: to_jsonb finds its argument's type in fn_expr.
void bind_to_jsonb(AuditColumn &column, MemoryContext context) {
	fmgr_info_cxt(F_TO_JSONB, &column.to_jsonb, context);
	MemoryContext old = MemoryContextSwitchTo(context);
	List *args = list_make1(makeNullConst(column.base_type, -1, InvalidOid));
	column.to_jsonb.fn_expr = reinterpret_cast<Node *>(
	    makeFuncExpr(F_TO_JSONB, JSONBOID, args, InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL));
	MemoryContextSwitchTo(old);
}

// The upstream type's name for errors: from its Type message, else the local type's, else its oid.
char *type_display_name(const Relations *relations, Oid upstream, Oid local) {
	auto *name = static_cast<TypeName *>(hash_search(relations->types, &upstream, HASH_FIND, nullptr));
	if (name)
		return pstrdup(quote_qualified_identifier(name->nspname, name->typname));
	if (OidIsValid(local))
		return format_type_be(local);
	return psprintf("with oid %u", upstream);
}

// Whether a type's output function reads the settings that output_settings_match checks.
bool output_reads_settings(Oid base) {
	switch (base) {
	case BYTEAOID:    // bytea_output
	case INTERVALOID: // IntervalStyle
	case POINTOID:    // extra_float_digits, as every geometric type
	case LSEGOID:
	case PATHOID:
	case BOXOID:
	case POLYGONOID:
	case LINEOID:
	case CIRCLEOID:
		return true;
	default:
		return false;
	}
}

// Prepares what reads and renders a column's binary values, when its type exists here: the receive
// function, and the output function for the kinds whose jsonb value is the text.
void prepare_binary(AuditColumn &column, MemoryContext context) {
	if (!OidIsValid(column.local_type))
		return;
	int16 typlen;
	bool typbyval;
	char typalign, typdelim;
	Oid receive;
	get_type_io_data(column.local_type, IOFunc_receive, &typlen, &typbyval, &typalign, &typdelim,
	                 &column.receive_ioparam, &receive);
	if (OidIsValid(receive))
		fmgr_info_cxt(receive, &column.receive, context);
	column.check_object_oids = binary_has_object_oids(column.local_type);
	if (column.kind == JsonKind::String) {
		Oid output;
		bool varlena;
		getTypeOutputInfo(column.base_type, &output, &varlena);
		fmgr_info_cxt(output, &column.output, context);
	}
}

// Decides how one column converts and prepares the functions it needs, in context.
void prepare_column(const Relations *relations, AuditColumn &column, const po::RelationColumn &c,
                    MemoryContext context) {
	column.name = copy_name(c.name);
	column.name_len = static_cast<int>(strlen(column.name));
	column.key = c.is_key();
	column.upstream_type = c.type;
	column.typmod = c.typmod;
	column.local_type = find_local_type(relations, c.type);
	column.base_type = OidIsValid(column.local_type) ? getBaseType(column.local_type) : InvalidOid;
	column.kind = OidIsValid(column.base_type) ? kind_of(column.base_type) : JsonKind::String;
	if (column.kind == JsonKind::DateTime || column.kind == JsonKind::Generic) {
		Oid input;
		getTypeInputInfo(column.base_type, &input, &column.input_ioparam);
		fmgr_info_cxt(input, &column.input, context);
	}
	if (column.kind == JsonKind::Generic)
		bind_to_jsonb(column, context);
	column.type_name = type_display_name(relations, c.type, column.local_type);
	prepare_binary(column, context);
}

// Whether a column renders through functions that read DateStyle and similar settings: to_jsonb
// for Generic columns, the output function of a binary value for some types.
bool uses_output_settings(const AuditColumn &column) {
	return column.kind == JsonKind::Generic ||
	       (column.kind == JsonKind::String && OidIsValid(column.base_type) && output_reads_settings(column.base_type));
}

// Whether jsonb orders key a before key b: shorter first, then bytewise, as jsonb objects store them.
bool key_before(const AuditColumn &a, const AuditColumn &b) {
	if (a.name_len != b.name_len)
		return a.name_len < b.name_len;
	return memcmp(a.name, b.name, a.name_len) < 0;
}

// Whether a column's values convert to jsonb scalars (not nested documents).
bool converts_to_scalar(const AuditColumn &column) {
	return column.kind != JsonKind::Json && column.kind != JsonKind::Generic;
}

// Sorts the columns in jsonb key order and decides whether rows can be built directly in it: only
// scalars, and no two columns of the same name (a malformed Relation message could send that).
void order_keys(AuditRelation *rel) {
	rel->key_order = static_cast<int *>(palloc(sizeof(int) * Max(rel->ncolumns, 1)));
	for (int i = 0; i < rel->ncolumns; i++)
		rel->key_order[i] = i;
	const AuditColumn *columns = rel->columns;
	std::sort(rel->key_order, rel->key_order + rel->ncolumns,
	          [columns](int a, int b) { return key_before(columns[a], columns[b]); });
	rel->scalar = true;
	for (int i = 0; i < rel->ncolumns; i++) {
		const AuditColumn &column = columns[rel->key_order[i]];
		if (!converts_to_scalar(column) || (i > 0 && !key_before(columns[rel->key_order[i - 1]], column)))
			rel->scalar = false;
	}
}

// Builds a relation, with its columns, in context.
AuditRelation *build_relation(const Relations *relations, const po::Relation &message, MemoryContext context) {
	MemoryContext old = MemoryContextSwitchTo(context);
	auto *rel = static_cast<AuditRelation *>(palloc0(sizeof(AuditRelation)));
	rel->relation_id = message.relation_id;
	rel->nspname = copy_namespace(message.nspname);
	rel->relname = copy_name(message.relname);
	rel->nspname_text = CStringGetTextDatum(rel->nspname);
	rel->relname_text = CStringGetTextDatum(rel->relname);
	rel->replica_identity = static_cast<char>(message.replica_identity);
	rel->ncolumns = message.columns.size();
	rel->columns = static_cast<AuditColumn *>(palloc0(sizeof(AuditColumn) * Max(rel->ncolumns, 1)));
	int i = 0;
	for (po::RelationColumn c : message.columns) {
		prepare_column(relations, rel->columns[i], c, context);
		rel->uses_output_settings |= uses_output_settings(rel->columns[i]);
		rel->has_row_key |= rel->columns[i++].key;
	}
	// Under FULL the upstream flags every column as key, under NOTHING none: no key names the row.
	rel->has_row_key &=
	    rel->replica_identity == REPLICA_IDENTITY_DEFAULT || rel->replica_identity == REPLICA_IDENTITY_INDEX;
	order_keys(rel);
	MemoryContextSwitchTo(old);
	return rel;
}

} // namespace

Relations *relations_create(MemoryContext context) {
	auto *relations = static_cast<Relations *>(MemoryContextAllocZero(context, sizeof(Relations)));
	relations->context = context;
	relations->relations = create_oid_hash("logical_audit relations", sizeof(RelationEntry), context);
	relations->types = create_oid_hash("logical_audit upstream types", sizeof(TypeName), context);
	return relations;
}

void relations_add_type(Relations *relations, const po::Type &type) {
	MemoryContext old = MemoryContextSwitchTo(relations->context);
	char *nspname = copy_namespace(type.nspname);
	char *typname = copy_name(type.typname);
	MemoryContextSwitchTo(old);
	Oid type_id = type.type_id;
	bool found;
	auto *entry = static_cast<TypeName *>(hash_search(relations->types, &type_id, HASH_ENTER, &found));
	if (found) {
		pfree(entry->nspname);
		pfree(entry->typname);
	}
	entry->nspname = nspname;
	entry->typname = typname;
}

void relations_add(Relations *relations, const po::Relation &relation) {
	// Built under the caller's (short-lived) context, so that an error halfway leaves nothing
	// behind, and moved under the long-lived one once complete, as the relcache does.
	MemoryContext context = AllocSetContextCreate(CurrentMemoryContext, "logical_audit relation", ALLOCSET_SMALL_SIZES);
	AuditRelation *built = build_relation(relations, relation, context);
	MemoryContextSetParent(context, relations->context);
	Oid relation_id = relation.relation_id;
	bool found;
	auto *entry = static_cast<RelationEntry *>(hash_search(relations->relations, &relation_id, HASH_ENTER, &found));
	if (found)
		MemoryContextDelete(entry->context);
	entry->relation = built;
	entry->context = context;
}

namespace {

// Appends a name and its terminating zero byte, as pgoutput sends names.
void append_name(StringInfo out, const char *name) {
	appendBinaryStringInfo(out, name, static_cast<int>(strlen(name)) + 1);
}

// A Type message announcing an upstream type, as pgoutput would send it outside a stream.
void encode_type(StringInfo out, const TypeName &type) {
	pq_sendbyte(out, 'Y');
	pq_sendint32(out, type.type_id);
	append_name(out, type.nspname);
	append_name(out, type.typname);
}

// A Relation message announcing a relation as the audit knows it, as pgoutput would send it.
void encode_relation(StringInfo out, const AuditRelation &relation) {
	pq_sendbyte(out, 'R');
	pq_sendint32(out, relation.relation_id);
	append_name(out, relation.nspname);
	append_name(out, relation.relname);
	pq_sendbyte(out, relation.replica_identity);
	pq_sendint16(out, relation.ncolumns);
	for (int i = 0; i < relation.ncolumns; i++) {
		const AuditColumn &column = relation.columns[i];
		pq_sendbyte(out, column.key ? 1 : 0);
		append_name(out, column.name);
		pq_sendint32(out, column.upstream_type);
		pq_sendint32(out, column.typmod);
	}
}

} // namespace

void relations_describe(const Relations *relations, const AuditRelation *relation, DescribeSink sink, void *arg) {
	StringInfoData out;
	initStringInfo(&out);
	for (int i = 0; i < relation->ncolumns; i++) {
		Oid type_id = relation->columns[i].upstream_type;
		auto *type = static_cast<TypeName *>(hash_search(relations->types, &type_id, HASH_FIND, nullptr));
		if (type == nullptr)
			continue;
		resetStringInfo(&out);
		encode_type(&out, *type);
		sink(arg, reinterpret_cast<const uint8_t *>(out.data), out.len);
	}
	resetStringInfo(&out);
	encode_relation(&out, *relation);
	sink(arg, reinterpret_cast<const uint8_t *>(out.data), out.len);
	pfree(out.data);
}

const AuditRelation *relations_find(const Relations *relations, po::Oid relation_id) {
	Oid key = relation_id;
	auto *entry = static_cast<RelationEntry *>(hash_search(relations->relations, &key, HASH_FIND, nullptr));
	return entry ? entry->relation : nullptr;
}

} // namespace logical_audit::audit
