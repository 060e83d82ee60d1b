/*
 * mqtt.h - the MQTT 3.1 / 3.1.1 / 5.0 codec: bytes <-> packet structs.
 *
 * Design
 * ------
 * This module is pure: no I/O, no allocation, no globals, no logging. That
 * makes it trivially fuzzable and usable from any thread.
 *
 * Decoding is zero-copy. A decoded packet holds `mqtt_str` slices that point
 * into the caller's input buffer, so the buffer must outlive the packet
 * struct. Lists whose length is only known by parsing (the topic filters of
 * SUBSCRIBE/UNSUBSCRIBE, the reason codes of SUBACK/UNSUBACK, user
 * properties) are validated in full by the decoder and then exposed as a raw
 * slice plus a count; iterate them with the helpers below, which cannot fail
 * on a slice the decoder accepted.
 *
 * Encoding writes into a caller-provided buffer whose size the caller first
 * learns from mqtt_encoded_size(). The encoder trusts its input (it comes
 * from the broker, not from the network) except where noted.
 *
 * Errors are MQTT 5 reason codes (enum mqtt_rc, all >= 0x80), which the
 * broker maps to a CONNACK/DISCONNECT reason for v5 or a plain close for v3.
 * MQTT_RC_SUCCESS (0) means success everywhere.
 */
#ifndef KEEPMQ_MQTT_H
#define KEEPMQ_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol levels as they appear on the wire in CONNECT. */
enum mqtt_version {
	MQTT_V31 = 3,  /* protocol name "MQIsdp" */
	MQTT_V311 = 4, /* protocol name "MQTT" */
	MQTT_V5 = 5,   /* protocol name "MQTT" */
};

enum mqtt_ptype {
	MQTT_CONNECT = 1,
	MQTT_CONNACK = 2,
	MQTT_PUBLISH = 3,
	MQTT_PUBACK = 4,
	MQTT_PUBREC = 5,
	MQTT_PUBREL = 6,
	MQTT_PUBCOMP = 7,
	MQTT_SUBSCRIBE = 8,
	MQTT_SUBACK = 9,
	MQTT_UNSUBSCRIBE = 10,
	MQTT_UNSUBACK = 11,
	MQTT_PINGREQ = 12,
	MQTT_PINGRESP = 13,
	MQTT_DISCONNECT = 14,
	MQTT_AUTH = 15,
};

/* MQTT 5 reason codes (section 2.4). Also used as this module's error codes. */
enum mqtt_rc {
	MQTT_RC_SUCCESS = 0x00, /* also: normal disconnection, granted QoS 0 */
	MQTT_RC_GRANTED_QOS1 = 0x01,
	MQTT_RC_GRANTED_QOS2 = 0x02,
	MQTT_RC_DISCONNECT_WITH_WILL = 0x04,
	MQTT_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
	MQTT_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
	MQTT_RC_CONTINUE_AUTHENTICATION = 0x18,
	MQTT_RC_REAUTHENTICATE = 0x19,
	MQTT_RC_UNSPECIFIED_ERROR = 0x80,
	MQTT_RC_MALFORMED_PACKET = 0x81,
	MQTT_RC_PROTOCOL_ERROR = 0x82,
	MQTT_RC_IMPLEMENTATION_SPECIFIC_ERROR = 0x83,
	MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84,
	MQTT_RC_CLIENT_IDENTIFIER_NOT_VALID = 0x85,
	MQTT_RC_BAD_USER_NAME_OR_PASSWORD = 0x86,
	MQTT_RC_NOT_AUTHORIZED = 0x87,
	MQTT_RC_SERVER_UNAVAILABLE = 0x88,
	MQTT_RC_SERVER_BUSY = 0x89,
	MQTT_RC_BANNED = 0x8A,
	MQTT_RC_SERVER_SHUTTING_DOWN = 0x8B,
	MQTT_RC_BAD_AUTHENTICATION_METHOD = 0x8C,
	MQTT_RC_KEEP_ALIVE_TIMEOUT = 0x8D,
	MQTT_RC_SESSION_TAKEN_OVER = 0x8E,
	MQTT_RC_TOPIC_FILTER_INVALID = 0x8F,
	MQTT_RC_TOPIC_NAME_INVALID = 0x90,
	MQTT_RC_PACKET_IDENTIFIER_IN_USE = 0x91,
	MQTT_RC_PACKET_IDENTIFIER_NOT_FOUND = 0x92,
	MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93,
	MQTT_RC_TOPIC_ALIAS_INVALID = 0x94,
	MQTT_RC_PACKET_TOO_LARGE = 0x95,
	MQTT_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
	MQTT_RC_QUOTA_EXCEEDED = 0x97,
	MQTT_RC_ADMINISTRATIVE_ACTION = 0x98,
	MQTT_RC_PAYLOAD_FORMAT_INVALID = 0x99,
	MQTT_RC_RETAIN_NOT_SUPPORTED = 0x9A,
	MQTT_RC_QOS_NOT_SUPPORTED = 0x9B,
	MQTT_RC_USE_ANOTHER_SERVER = 0x9C,
	MQTT_RC_SERVER_MOVED = 0x9D,
	MQTT_RC_SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E,
	MQTT_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
	MQTT_RC_MAXIMUM_CONNECT_TIME = 0xA0,
	MQTT_RC_SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1,
	MQTT_RC_WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2,
};

/* MQTT 3.1/3.1.1 CONNACK return codes. */
enum mqtt_v3_connack {
	MQTT_V3_ACCEPTED = 0,
	MQTT_V3_REFUSED_PROTOCOL_VERSION = 1,
	MQTT_V3_REFUSED_IDENTIFIER_REJECTED = 2,
	MQTT_V3_REFUSED_SERVER_UNAVAILABLE = 3,
	MQTT_V3_REFUSED_BAD_USERNAME_PASSWORD = 4,
	MQTT_V3_REFUSED_NOT_AUTHORIZED = 5,
};

/* Maps a v5 CONNACK reason code to the closest v3 return code. */
uint8_t mqtt_rc_to_v3_connack(uint8_t rc);
/* Short English name of a reason code ("Malformed Packet"), never NULL. */
const char *mqtt_rc_name(uint8_t rc);
/* "CONNECT", "PUBLISH", ...; "?" for anything else. */
const char *mqtt_ptype_name(uint8_t type);

/* A byte slice. Not NUL-terminated. p may be NULL only when len == 0. */
typedef struct mqtt_str {
	const uint8_t *p;
	uint32_t len;
} mqtt_str;

#define MQTT_STR_NULL ((mqtt_str){NULL, 0})
mqtt_str mqtt_str_c(const char *s); /* slice of a C string (for tests/encoding) */
bool mqtt_str_eq(mqtt_str a, mqtt_str b);
bool mqtt_str_eq_c(mqtt_str a, const char *s);

/* ---------------------------------------------------------------- properties */

/* Property identifiers (section 2.2.2.2). */
enum mqtt_prop_id {
	MQTT_PROP_PAYLOAD_FORMAT_INDICATOR = 0x01,
	MQTT_PROP_MESSAGE_EXPIRY_INTERVAL = 0x02,
	MQTT_PROP_CONTENT_TYPE = 0x03,
	MQTT_PROP_RESPONSE_TOPIC = 0x08,
	MQTT_PROP_CORRELATION_DATA = 0x09,
	MQTT_PROP_SUBSCRIPTION_IDENTIFIER = 0x0B,
	MQTT_PROP_SESSION_EXPIRY_INTERVAL = 0x11,
	MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER = 0x12,
	MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,
	MQTT_PROP_AUTHENTICATION_METHOD = 0x15,
	MQTT_PROP_AUTHENTICATION_DATA = 0x16,
	MQTT_PROP_REQUEST_PROBLEM_INFORMATION = 0x17,
	MQTT_PROP_WILL_DELAY_INTERVAL = 0x18,
	MQTT_PROP_REQUEST_RESPONSE_INFORMATION = 0x19,
	MQTT_PROP_RESPONSE_INFORMATION = 0x1A,
	MQTT_PROP_SERVER_REFERENCE = 0x1C,
	MQTT_PROP_REASON_STRING = 0x1F,
	MQTT_PROP_RECEIVE_MAXIMUM = 0x21,
	MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
	MQTT_PROP_TOPIC_ALIAS = 0x23,
	MQTT_PROP_MAXIMUM_QOS = 0x24,
	MQTT_PROP_RETAIN_AVAILABLE = 0x25,
	MQTT_PROP_USER_PROPERTY = 0x26,
	MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,
	MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28,
	MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29,
	MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE = 0x2A,
};

/* Bits of mqtt_props.present: one per property that has a scalar/string field. */
enum mqtt_prop_flag {
	MQTT_PF_PAYLOAD_FORMAT = 1u << 0,
	MQTT_PF_MESSAGE_EXPIRY = 1u << 1,
	MQTT_PF_CONTENT_TYPE = 1u << 2,
	MQTT_PF_RESPONSE_TOPIC = 1u << 3,
	MQTT_PF_CORRELATION_DATA = 1u << 4,
	MQTT_PF_SUBSCRIPTION_ID = 1u << 5,
	MQTT_PF_SESSION_EXPIRY = 1u << 6,
	MQTT_PF_ASSIGNED_CLIENT_ID = 1u << 7,
	MQTT_PF_SERVER_KEEPALIVE = 1u << 8,
	MQTT_PF_AUTH_METHOD = 1u << 9,
	MQTT_PF_AUTH_DATA = 1u << 10,
	MQTT_PF_REQUEST_PROBLEM_INFO = 1u << 11,
	MQTT_PF_WILL_DELAY = 1u << 12,
	MQTT_PF_REQUEST_RESPONSE_INFO = 1u << 13,
	MQTT_PF_RESPONSE_INFO = 1u << 14,
	MQTT_PF_SERVER_REFERENCE = 1u << 15,
	MQTT_PF_REASON_STRING = 1u << 16,
	MQTT_PF_RECEIVE_MAXIMUM = 1u << 17,
	MQTT_PF_TOPIC_ALIAS_MAXIMUM = 1u << 18,
	MQTT_PF_TOPIC_ALIAS = 1u << 19,
	MQTT_PF_MAXIMUM_QOS = 1u << 20,
	MQTT_PF_RETAIN_AVAILABLE = 1u << 21,
	MQTT_PF_MAXIMUM_PACKET_SIZE = 1u << 22,
	MQTT_PF_WILDCARD_SUB_AVAILABLE = 1u << 23,
	MQTT_PF_SUB_ID_AVAILABLE = 1u << 24,
	MQTT_PF_SHARED_SUB_AVAILABLE = 1u << 25,
};

/*
 * The properties of one packet (or of a CONNECT's will). Only fields whose
 * flag is set in `present` are meaningful. Only MQTT 5 packets carry
 * properties; for v3 the decoder leaves this zeroed and the encoder ignores it.
 *
 * User properties are kept in their wire form: `user_props` is a byte run
 * of the property block, from the first User Property entry (0x26, UTF-8
 * name, UTF-8 value) to the end of the last one, in packet order. That lets
 * the broker forward them to subscribers with one memcpy. A client may
 * interleave other properties between user properties; the decoder then sets
 * `user_props_mixed`, the iterator skips the other entries, and the encoder
 * writes only the User Property entries of the run (slower, still correct).
 *
 * Subscription identifiers: a client's SUBSCRIBE carries at most one
 * (`subscription_id`). A server's PUBLISH may carry several: on encode, if
 * `sub_ids`/`n_sub_ids` are set they are all written (and subscription_id is
 * ignored); on decode of a PUBLISH with several, subscription_id holds the
 * first and n_sub_ids the count (sub_ids stays NULL).
 */
typedef struct mqtt_props {
	uint32_t present;
	uint8_t payload_format;
	uint8_t request_problem_info;
	uint8_t request_response_info;
	uint8_t maximum_qos;
	uint8_t retain_available;
	uint8_t wildcard_sub_available;
	uint8_t sub_id_available;
	uint8_t shared_sub_available;
	uint16_t server_keepalive;
	uint16_t receive_maximum;
	uint16_t topic_alias_maximum;
	uint16_t topic_alias;
	uint32_t message_expiry;
	uint32_t subscription_id;
	uint32_t session_expiry;
	uint32_t will_delay;
	uint32_t maximum_packet_size;
	mqtt_str content_type;
	mqtt_str response_topic;
	mqtt_str correlation_data;
	mqtt_str assigned_client_id;
	mqtt_str auth_method;
	mqtt_str auth_data;
	mqtt_str response_info;
	mqtt_str server_reference;
	mqtt_str reason_string;
	mqtt_str user_props; /* wire form, see above */
	uint32_t n_user_props;
	bool user_props_mixed; /* run contains other properties too */
	const uint32_t *sub_ids; /* encode only */
	uint32_t n_sub_ids;
} mqtt_props;

/* Iterates the wire-form user property run. Returns false at the end. */
typedef struct mqtt_user_prop_iter {
	mqtt_str rest;
} mqtt_user_prop_iter;
void mqtt_user_prop_iter_init(mqtt_user_prop_iter *it, mqtt_str user_props);
bool mqtt_user_prop_next(mqtt_user_prop_iter *it, mqtt_str *name, mqtt_str *value);
/*
 * Appends one user property in wire form to out (which has room for
 * mqtt_user_prop_size(name, value) bytes). Returns bytes written.
 */
size_t mqtt_user_prop_size(mqtt_str name, mqtt_str value);
size_t mqtt_user_prop_write(uint8_t *out, mqtt_str name, mqtt_str value);

/* ---------------------------------------------------------------- packets */

typedef struct mqtt_connect {
	mqtt_str protocol_name; /* "MQTT" or "MQIsdp" */
	uint8_t version;        /* enum mqtt_version */
	bool clean_start;       /* clean session (v3) / clean start (v5) */
	bool will;
	uint8_t will_qos;
	bool will_retain;
	bool has_username;
	bool has_password;
	uint16_t keepalive;
	mqtt_str client_id;
	mqtt_str will_topic;
	mqtt_str will_payload;
	mqtt_str username;
	mqtt_str password;
	mqtt_props props;
	mqtt_props will_props;
} mqtt_connect;

typedef struct mqtt_connack {
	bool session_present;
	uint8_t rc; /* v5 reason code, or v3 return code when encoding v3 */
	mqtt_props props;
} mqtt_connack;

typedef struct mqtt_publish {
	uint8_t qos;
	bool dup;
	bool retain;
	uint16_t packet_id; /* 0 for QoS 0 */
	mqtt_str topic;     /* may be empty in v5 when a topic alias is used */
	mqtt_props props;
	mqtt_str payload;
} mqtt_publish;

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
typedef struct mqtt_ack {
	uint16_t packet_id;
	uint8_t rc;
	mqtt_props props;
} mqtt_ack;

/* Subscription options byte (v5 3.8.3.1; in v3 only the QoS bits exist). */
enum {
	MQTT_SUBOPT_QOS_MASK = 0x03,
	MQTT_SUBOPT_NO_LOCAL = 0x04,
	MQTT_SUBOPT_RETAIN_AS_PUBLISHED = 0x08,
	MQTT_SUBOPT_RETAIN_HANDLING_MASK = 0x30,
	MQTT_SUBOPT_RETAIN_HANDLING_SHIFT = 4,
};

/*
 * SUBSCRIBE and UNSUBSCRIBE. `entries` is the raw payload; iterate it with
 * mqtt_sub_iter. For UNSUBSCRIBE the entries have no options byte.
 */
typedef struct mqtt_subscribe {
	uint16_t packet_id;
	mqtt_props props;
	mqtt_str entries;
	uint32_t count; /* >= 1 after a successful decode */
} mqtt_subscribe;

typedef struct mqtt_sub_iter {
	mqtt_str rest;
	bool has_options; /* true for SUBSCRIBE, false for UNSUBSCRIBE */
} mqtt_sub_iter;
void mqtt_sub_iter_init(mqtt_sub_iter *it, const mqtt_subscribe *s, bool is_subscribe);
/* options is set to 0 for UNSUBSCRIBE entries. */
bool mqtt_sub_next(mqtt_sub_iter *it, mqtt_str *filter, uint8_t *options);
/*
 * Builds `entries` for encoding: the wire size of one SUBSCRIBE
 * (is_subscribe) or UNSUBSCRIBE entry, and a writer that appends it to out
 * (options is not written for UNSUBSCRIBE). Returns bytes written.
 */
size_t mqtt_sub_entry_size(mqtt_str filter, bool is_subscribe);
size_t mqtt_sub_entry_write(uint8_t *out, mqtt_str filter, uint8_t options, bool is_subscribe);

/* SUBACK and UNSUBACK (v3.1.1 UNSUBACK has no reason codes: count == 0). */
typedef struct mqtt_suback {
	uint16_t packet_id;
	mqtt_props props;
	const uint8_t *rcs;
	uint32_t count;
} mqtt_suback;

/* DISCONNECT and AUTH. */
typedef struct mqtt_disconnect {
	uint8_t rc;
	mqtt_props props;
} mqtt_disconnect;

typedef struct mqtt_packet {
	uint8_t type;  /* enum mqtt_ptype */
	uint8_t flags; /* low nibble of the first byte */
	union {
		mqtt_connect connect;
		mqtt_connack connack;
		mqtt_publish publish;
		mqtt_ack ack;             /* PUBACK, PUBREC, PUBREL, PUBCOMP */
		mqtt_subscribe subscribe; /* SUBSCRIBE, UNSUBSCRIBE */
		mqtt_suback suback;       /* SUBACK, UNSUBACK */
		mqtt_disconnect disconnect; /* DISCONNECT, AUTH */
	} u;
} mqtt_packet;

/* ---------------------------------------------------------------- framing */

/* Largest value a Remaining Length can hold (268,435,455). */
#define MQTT_MAX_REMAINING_LENGTH 268435455u

enum mqtt_frame_result {
	MQTT_FRAME_OK = 0,         /* *pkt_len is the whole packet's size */
	MQTT_FRAME_INCOMPLETE = 1, /* need more bytes; *pkt_len is set if the header is complete */
	/* any other value is a reason code: MQTT_RC_MALFORMED_PACKET or MQTT_RC_PACKET_TOO_LARGE */
};

/*
 * Looks at the start of a byte stream and says whether a whole packet is
 * there. max_size bounds the total packet size (fixed header included); 0
 * means the protocol maximum. When the fixed header is complete but the body
 * is not, returns MQTT_FRAME_INCOMPLETE and sets *pkt_len to the total size
 * so the caller can size its buffer; otherwise *pkt_len is 0 on INCOMPLETE.
 * A packet larger than max_size is reported as MQTT_RC_PACKET_TOO_LARGE as soon
 * as its header is complete, before its body arrives.
 */
int mqtt_frame(const uint8_t *buf, size_t len, uint32_t max_size, uint32_t *pkt_len);

/* ---------------------------------------------------------------- decoding */

/*
 * Decodes one whole packet (as delimited by mqtt_frame) for a connection
 * speaking `version` (enum mqtt_version). For CONNECT the version argument is
 * ignored: the packet says which it is, and the result's connect.version
 * tells the caller.
 *
 * Validates everything the specification lets a codec validate without
 * session state: reserved flag bits, lengths, UTF-8 well-formedness (and the
 * absence of U+0000) of every UTF-8 string, property identifiers allowed for
 * the packet type and not duplicated where the spec forbids it, property
 * value ranges (e.g. Receive Maximum 0, Maximum Packet Size 0, Topic Alias 0,
 * Subscription Identifier 0 are errors), QoS 3, a PUBLISH with QoS 0 and DUP
 * set (v5: protocol error), wildcards in a PUBLISH topic (MQTT_RC_TOPIC_NAME_INVALID),
 * packet identifier 0 where one is required, empty SUBSCRIBE/UNSUBSCRIBE,
 * invalid topic filter syntax in SUBSCRIBE/UNSUBSCRIBE (MQTT_RC_TOPIC_FILTER_INVALID
 * is NOT returned here: filter syntax is a per-entry SUBACK matter; the
 * decoder only checks the UTF-8 and that the filter is non-empty - empty is
 * MQTT_RC_PROTOCOL_ERROR), the reserved bits of subscription options and
 * retain handling 3 (MQTT_RC_PROTOCOL_ERROR), CONNECT's reserved flag bit,
 * will flags without a will, password without user name in v3.1.1
 * (v5 allows it), unknown protocol name/level (MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION).
 * v3 packets must not carry anything after their last field except where
 * the spec allows (PUBLISH payload).
 *
 * Returns MQTT_RC_SUCCESS or a reason code >= 0x80. On error *pkt is
 * unspecified.
 */
int mqtt_decode(const uint8_t *buf, size_t len, uint8_t version, mqtt_packet *pkt);

/* ---------------------------------------------------------------- encoding */

/*
 * Size in bytes of the encoding of pkt for `version`, fixed header included.
 * For v3 versions properties are ignored, and reason codes are written only
 * where v3 has them (CONNACK return code, SUBACK codes).
 */
size_t mqtt_encoded_size(const mqtt_packet *pkt, uint8_t version);

/*
 * Writes pkt into out, which has room for mqtt_encoded_size(pkt, version)
 * bytes. Returns the number of bytes written (equal to that size).
 * v5 acks (PUBACK..PUBCOMP) use the short forms the spec allows: with rc 0
 * and no properties only the packet identifier is written; DISCONNECT with
 * rc 0 and no properties has remaining length 0.
 */
size_t mqtt_encode(const mqtt_packet *pkt, uint8_t version, uint8_t *out);

/* Size of the properties block of `props` (every property it holds is
 * counted, whatever the packet type), including its variable-byte-integer
 * length prefix. Exposed for the broker, which
 * trims optional properties (reason string, user properties) to respect a
 * client's Maximum Packet Size. */
size_t mqtt_props_size(const mqtt_props *props);

/* Variable byte integer helpers. */
size_t mqtt_varint_size(uint32_t v); /* 1..4; v must be <= MQTT_MAX_REMAINING_LENGTH */
size_t mqtt_varint_write(uint8_t *out, uint32_t v);

/* ---------------------------------------------------------------- UTF-8 and topics */

/*
 * True if s is well-formed UTF-8 (no overlongs, no surrogates, nothing above
 * U+10FFFF) and contains no U+0000 - the MUSTs of MQTT 1.5.4.
 */
bool mqtt_utf8_valid(const uint8_t *s, size_t len);

/* A topic name for PUBLISH: non-empty, no '+' or '#'. (UTF-8 checked by the decoder.) */
bool mqtt_topic_name_valid(mqtt_str topic);

/*
 * A topic filter: non-empty; '#' only as the whole last level; '+' only as a
 * whole level. For a shared subscription pass the filter part only (see
 * mqtt_shared_parse).
 */
bool mqtt_topic_filter_valid(mqtt_str filter);

/* True if filter contains '+' or '#'. */
bool mqtt_topic_is_wildcard(mqtt_str filter);

/* Number of levels ('/'-separated parts) in a topic or filter. */
uint32_t mqtt_topic_levels(mqtt_str topic);

/*
 * Does `topic` match `filter`? Implements 4.7 including: '#' matches the
 * parent level ("a/#" matches "a"), '+' matches an empty level, and topics
 * beginning with '$' are not matched by a filter whose first level is '+'
 * or '#'. Both arguments are assumed valid.
 */
bool mqtt_topic_matches(mqtt_str filter, mqtt_str topic);

/*
 * Splits "$share/<group>/<filter>" into group and filter, and "$queue/<filter>"
 * (the original broker's form) into group "$queue" and filter. Returns:
 *   0  not a shared subscription (group and filter untouched),
 *   1  a valid shared subscription (group non-empty without '+', '#' or '/', filter non-empty),
 *  -1  looks like one but is malformed ("$share/", "$share/g", "$share/a+b/x", "$share//x").
 * The caller still validates the filter with mqtt_topic_filter_valid().
 */
int mqtt_shared_parse(mqtt_str full, mqtt_str *group, mqtt_str *filter);

#ifdef __cplusplus
}
#endif
#endif /* KEEPMQ_MQTT_H */
