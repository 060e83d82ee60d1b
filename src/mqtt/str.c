/* str.c - mqtt_str slice helpers. */
#include <string.h>

#include "mqtt/mqtt.h"

mqtt_str mqtt_str_c(const char *s)
{
	mqtt_str r = {(const uint8_t *)s, s ? (uint32_t)strlen(s) : 0};
	return r;
}

bool mqtt_str_eq(mqtt_str a, mqtt_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

bool mqtt_str_eq_c(mqtt_str a, const char *s) { return mqtt_str_eq(a, mqtt_str_c(s)); }
