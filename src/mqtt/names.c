/*
 * names.c - human-readable names of reason codes and packet types, and the
 * v5 -> v3 CONNACK code mapping.
 *
 * Design
 * ------
 * Plain switch statements over constants: the compiler turns them into jump
 * tables, they need no initialisation, and an unknown value falls through to
 * a fixed string, so the callers (logging, mostly) never see NULL.
 */
#include "mqtt/mqtt.h"

const char *mqtt_rc_name(uint8_t rc)
{
	switch (rc) {
	case MQTT_RC_SUCCESS:
		return "Success";
	case MQTT_RC_GRANTED_QOS1:
		return "Granted QoS 1";
	case MQTT_RC_GRANTED_QOS2:
		return "Granted QoS 2";
	case MQTT_RC_DISCONNECT_WITH_WILL:
		return "Disconnect with Will Message";
	case MQTT_RC_NO_MATCHING_SUBSCRIBERS:
		return "No matching subscribers";
	case MQTT_RC_NO_SUBSCRIPTION_EXISTED:
		return "No subscription existed";
	case MQTT_RC_CONTINUE_AUTHENTICATION:
		return "Continue authentication";
	case MQTT_RC_REAUTHENTICATE:
		return "Re-authenticate";
	case MQTT_RC_UNSPECIFIED_ERROR:
		return "Unspecified error";
	case MQTT_RC_MALFORMED_PACKET:
		return "Malformed Packet";
	case MQTT_RC_PROTOCOL_ERROR:
		return "Protocol Error";
	case MQTT_RC_IMPLEMENTATION_SPECIFIC_ERROR:
		return "Implementation specific error";
	case MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION:
		return "Unsupported Protocol Version";
	case MQTT_RC_CLIENT_IDENTIFIER_NOT_VALID:
		return "Client Identifier not valid";
	case MQTT_RC_BAD_USER_NAME_OR_PASSWORD:
		return "Bad User Name or Password";
	case MQTT_RC_NOT_AUTHORIZED:
		return "Not authorized";
	case MQTT_RC_SERVER_UNAVAILABLE:
		return "Server unavailable";
	case MQTT_RC_SERVER_BUSY:
		return "Server busy";
	case MQTT_RC_BANNED:
		return "Banned";
	case MQTT_RC_SERVER_SHUTTING_DOWN:
		return "Server shutting down";
	case MQTT_RC_BAD_AUTHENTICATION_METHOD:
		return "Bad authentication method";
	case MQTT_RC_KEEP_ALIVE_TIMEOUT:
		return "Keep Alive timeout";
	case MQTT_RC_SESSION_TAKEN_OVER:
		return "Session taken over";
	case MQTT_RC_TOPIC_FILTER_INVALID:
		return "Topic Filter invalid";
	case MQTT_RC_TOPIC_NAME_INVALID:
		return "Topic Name invalid";
	case MQTT_RC_PACKET_IDENTIFIER_IN_USE:
		return "Packet Identifier in use";
	case MQTT_RC_PACKET_IDENTIFIER_NOT_FOUND:
		return "Packet Identifier not found";
	case MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED:
		return "Receive Maximum exceeded";
	case MQTT_RC_TOPIC_ALIAS_INVALID:
		return "Topic Alias invalid";
	case MQTT_RC_PACKET_TOO_LARGE:
		return "Packet too large";
	case MQTT_RC_MESSAGE_RATE_TOO_HIGH:
		return "Message rate too high";
	case MQTT_RC_QUOTA_EXCEEDED:
		return "Quota exceeded";
	case MQTT_RC_ADMINISTRATIVE_ACTION:
		return "Administrative action";
	case MQTT_RC_PAYLOAD_FORMAT_INVALID:
		return "Payload format invalid";
	case MQTT_RC_RETAIN_NOT_SUPPORTED:
		return "Retain not supported";
	case MQTT_RC_QOS_NOT_SUPPORTED:
		return "QoS not supported";
	case MQTT_RC_USE_ANOTHER_SERVER:
		return "Use another server";
	case MQTT_RC_SERVER_MOVED:
		return "Server moved";
	case MQTT_RC_SHARED_SUBSCRIPTIONS_NOT_SUPPORTED:
		return "Shared Subscriptions not supported";
	case MQTT_RC_CONNECTION_RATE_EXCEEDED:
		return "Connection rate exceeded";
	case MQTT_RC_MAXIMUM_CONNECT_TIME:
		return "Maximum connect time";
	case MQTT_RC_SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED:
		return "Subscription Identifiers not supported";
	case MQTT_RC_WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED:
		return "Wildcard Subscriptions not supported";
	}
	return "Unknown reason code";
}

const char *mqtt_ptype_name(uint8_t type)
{
	switch (type) {
	case MQTT_CONNECT:
		return "CONNECT";
	case MQTT_CONNACK:
		return "CONNACK";
	case MQTT_PUBLISH:
		return "PUBLISH";
	case MQTT_PUBACK:
		return "PUBACK";
	case MQTT_PUBREC:
		return "PUBREC";
	case MQTT_PUBREL:
		return "PUBREL";
	case MQTT_PUBCOMP:
		return "PUBCOMP";
	case MQTT_SUBSCRIBE:
		return "SUBSCRIBE";
	case MQTT_SUBACK:
		return "SUBACK";
	case MQTT_UNSUBSCRIBE:
		return "UNSUBSCRIBE";
	case MQTT_UNSUBACK:
		return "UNSUBACK";
	case MQTT_PINGREQ:
		return "PINGREQ";
	case MQTT_PINGRESP:
		return "PINGRESP";
	case MQTT_DISCONNECT:
		return "DISCONNECT";
	case MQTT_AUTH:
		return "AUTH";
	}
	return "?";
}

/*
 * v3 has five refusal codes. Credentials problems become "bad user name or
 * password", policy refusals "not authorized", and everything else (load,
 * redirection, errors a v3 client cannot be told about) "server unavailable",
 * which a v3 client treats as temporary.
 */
uint8_t mqtt_rc_to_v3_connack(uint8_t rc)
{
	switch (rc) {
	case MQTT_RC_SUCCESS:
		return MQTT_V3_ACCEPTED;
	case MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION:
		return MQTT_V3_REFUSED_PROTOCOL_VERSION;
	case MQTT_RC_CLIENT_IDENTIFIER_NOT_VALID:
		return MQTT_V3_REFUSED_IDENTIFIER_REJECTED;
	case MQTT_RC_BAD_USER_NAME_OR_PASSWORD:
	case MQTT_RC_BAD_AUTHENTICATION_METHOD:
		return MQTT_V3_REFUSED_BAD_USERNAME_PASSWORD;
	case MQTT_RC_NOT_AUTHORIZED:
	case MQTT_RC_BANNED:
		return MQTT_V3_REFUSED_NOT_AUTHORIZED;
	}
	return MQTT_V3_REFUSED_SERVER_UNAVAILABLE;
}
