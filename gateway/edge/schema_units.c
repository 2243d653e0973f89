/*
 * schema_units.c — the unit table schemas convert with: every unit is one scale/offset pair
 * onto its quantity's canonical unit (degC, hPa, m, m/s), so a conversion at apply time is
 * two multiplications and an addition whatever the pair of units.
 */
#include <string.h>
#include <strings.h>

#include "edge/schema_int.h"

/* ---- units ------------------------------------------------------------------------------- */

/* canonical = value * scale + offset; canonical units: degC, hPa, m, m/s. */
const struct unit_def schema_units[] = {
	{"C", Q_TEMP, 1.0, 0.0},         {"degC", Q_TEMP, 1.0, 0.0},
	{"celsius", Q_TEMP, 1.0, 0.0},   {"\xc2\xb0" "C", Q_TEMP, 1.0, 0.0},
	{"F", Q_TEMP, 5.0 / 9.0, -160.0 / 9.0}, {"degF", Q_TEMP, 5.0 / 9.0, -160.0 / 9.0},
	{"fahrenheit", Q_TEMP, 5.0 / 9.0, -160.0 / 9.0},
	{"\xc2\xb0" "F", Q_TEMP, 5.0 / 9.0, -160.0 / 9.0},
	{"K", Q_TEMP, 1.0, -273.15},     {"kelvin", Q_TEMP, 1.0, -273.15},
	{"hPa", Q_PRESSURE, 1.0, 0.0},   {"mbar", Q_PRESSURE, 1.0, 0.0},
	{"Pa", Q_PRESSURE, 0.01, 0.0},   {"kPa", Q_PRESSURE, 10.0, 0.0},
	{"bar", Q_PRESSURE, 1000.0, 0.0}, {"psi", Q_PRESSURE, 68.947572932, 0.0},
	{"inHg", Q_PRESSURE, 33.8638866667, 0.0},
	{"m", Q_LENGTH, 1.0, 0.0},       {"cm", Q_LENGTH, 0.01, 0.0},
	{"mm", Q_LENGTH, 0.001, 0.0},    {"km", Q_LENGTH, 1000.0, 0.0},
	{"ft", Q_LENGTH, 0.3048, 0.0},   {"in", Q_LENGTH, 0.0254, 0.0},
	{"m/s", Q_SPEED, 1.0, 0.0},      {"km/h", Q_SPEED, 1.0 / 3.6, 0.0},
	{"mph", Q_SPEED, 0.44704, 0.0},  {"kn", Q_SPEED, 0.514444444, 0.0},
};
#define NUNITS ((int)(sizeof schema_units / sizeof schema_units[0]))

int schema_unit_lookup(const char *s)
{
	/* Exact match first so "Pa" and "pa" style ambiguities resolve to the spelling given. */
	for (int i = 0; i < NUNITS; i++)
		if (strcmp(schema_units[i].name, s) == 0)
			return i;
	for (int i = 0; i < NUNITS; i++)
		if (strcasecmp(schema_units[i].name, s) == 0)
			return i;
	return -1;
}
