// What the audit knows of upstream relations and types, learnt from Relation and Type messages:
// for each column, how its values become jsonb (row_jsonb.hpp does the converting).
//
// Everything lives in palloc'd memory of the context given to relations_create (a long-lived
// context of the worker); nothing has a destructor, so an ERROR's longjmp abandons nothing.
//
// Column values come as text or, when pgoutput's option binary is on, in their types' binary
// form: a binary value is read with the local type's receive function and then rendered as its
// text would have been, so that both give the same rows. A binary value of a type this database
// does not have is an ERROR, never a guess.
#pragma once

#include "pgoutput/messages.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

// How a column's value becomes a jsonb value, decided once per Relation message.
enum class JsonKind {
	Bool,     // "t"/"f" -> true/false
	Integer,  // int2/int4/int8: a JSON number, read without numeric_in
	Number,   // a JSON number when the text is one, else a string (NaN, Infinity)
	Float,    // float4/float8: re-printed in shortest form as float*out does by default, then Number
	Json,     // json/jsonb text parsed and nested
	DateTime, // date, timestamp, timestamptz in to_jsonb's ISO form (timestamptz in UTC)
	String,   // the text itself (text, time, uuid, bytea in hex, enums, and types not known downstream)
	Generic,  // the local type's input function, then to_jsonb (arrays, composites, ranges, json casts)
};

struct AuditColumn {
	char *name;
	int name_len;
	bool key;          // part of the replica identity
	Oid upstream_type; // the type oid as the upstream sent it
	int32 typmod;
	Oid local_type; // the same type downstream, or InvalidOid when there is none
	Oid base_type;  // local_type with domains looked through, as to_jsonb looks through them
	JsonKind kind;
	FmgrInfo input; // local type input function (Generic, DateTime)
	Oid input_ioparam;
	FmgrInfo to_jsonb; // to_jsonb bound to local_type (Generic)
	char *type_name;   // the upstream type's name, for errors
	FmgrInfo receive;  // local type receive function (binary values); fn_oid is InvalidOid when none
	Oid receive_ioparam;
	bool check_object_oids; // binary values hold reg* values, checked before receive (see binary_oids.hpp)
	FmgrInfo output;        // local type output function (String, binary values)
};

struct AuditRelation {
	pgoutput::Oid relation_id;
	char *nspname;
	char *relname;
	Datum nspname_text; // the names as text Datums, for audit rows
	Datum relname_text;
	char replica_identity;
	int ncolumns;
	AuditColumn *columns;
	int *key_order;            // column indexes in the order of jsonb object keys (shorter first, then bytewise)
	bool scalar;               // every column converts to a scalar and names are unique: rows skip pushJsonbValue
	bool has_row_key;          // the replica identity names rows by key columns (DEFAULT with a key, or USING INDEX)
	bool uses_output_settings; // some column renders through output functions that read DateStyle & co.
};

struct Relations; // opaque: a hash of relations and upstream type names

// Creates an empty set of relations whose memory lives in context.
Relations *relations_create(MemoryContext context);

// Remembers an upstream type's schema and name, to map its columns to the same type downstream.
void relations_add_type(Relations *relations, const pgoutput::Type &type);

// Remembers (or replaces, after ALTER TABLE upstream) a relation and decides how each column
// converts. Call it in a short-lived memory context: what an error halfway leaves goes with it.
void relations_add(Relations *relations, const pgoutput::Relation &relation);

// The relation with that upstream id, or nullptr when no Relation message named it.
const AuditRelation *relations_find(const Relations *relations, pgoutput::Oid relation_id);

// Receives one message of a relation's description.
using DescribeSink = void (*)(void *arg, const uint8_t *data, size_t size);

// Describes a relation as pgoutput announced it, in messages as it sends them outside a stream: a
// Type message for each column type the upstream described, then the Relation message. For a spool
// file whose replay, in a later session, must know the relation.
void relations_describe(const Relations *relations, const AuditRelation *relation, DescribeSink sink, void *arg);

} // namespace logical_audit::audit
