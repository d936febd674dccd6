#!/usr/bin/env bash
# Prints the CGI/1.1 variables of the request.
for var in REQUEST_METHOD QUERY_STRING CONTENT_TYPE CONTENT_LENGTH PATH_INFO \
    SCRIPT_NAME SERVER_NAME SERVER_PORT SERVER_PROTOCOL SERVER_SOFTWARE \
    GATEWAY_INTERFACE REMOTE_ADDR; do
    printf '%s=%s\n' "$var" "${!var-}"
done
# And the request headers, HTTP_*.
for var in ${!HTTP_@}; do
    printf '%s=%s\n' "$var" "${!var}"
done
