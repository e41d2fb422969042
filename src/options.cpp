// Reading and checking a subscription's options object against the table of options.
#include "options.hpp"

#include <cstring>

#include "pg.hpp"

namespace logical_audit {

namespace {

// The option of that name, or nullptr.
const OptionSpec *find_option(const char *name) {
	for (const OptionSpec &spec : kOptionSpecs)
		if (strcmp(spec.name, name) == 0)
			return &spec;
	return nullptr;
}

// "a, b and c": the names of all options, for an error's detail.
char *option_names() {
	StringInfoData names;
	initStringInfo(&names);
	int count = lengthof(kOptionSpecs);
	for (int i = 0; i < count; i++)
		appendStringInfo(&names, "%s%s", i == 0 ? "" : i == count - 1 ? " and " : ", ", kOptionSpecs[i].name);
	return names.data;
}

// Sets one option from its key and value.
void set_option(Options *options, const char *key, const JsonbValue &value) {
	const OptionSpec *spec = find_option(key);
	if (spec == nullptr)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("unknown option \"%s\"", key),
		                errdetail("The options are %s.", option_names())));
	if (value.type != jbvBool)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("option \"%s\" must be a boolean", key)));
	options->*(spec->field) = value.val.boolean;
}

} // namespace

Options options_from_jsonb(const Jsonb *json) {
	Options options;
	for (const OptionSpec &spec : kOptionSpecs)
		options.*(spec.field) = spec.default_value;
	if (!JB_ROOT_IS_OBJECT(json))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("options must be a JSON object")));
	JsonbIterator *it = JsonbIteratorInit(const_cast<JsonbContainer *>(&json->root));
	JsonbValue value;
	JsonbIteratorToken token;
	while ((token = JsonbIteratorNext(&it, &value, true)) != WJB_DONE) {
		if (token != WJB_KEY)
			continue;
		char *key = pnstrdup(value.val.string.val, value.val.string.len);
		token = JsonbIteratorNext(&it, &value, true);
		Assert(token == WJB_VALUE);
		set_option(&options, key, value);
		pfree(key);
	}
	return options;
}

} // namespace logical_audit
