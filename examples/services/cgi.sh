#!/usr/bin/env bash
# A plain CGI/1.1 script (RFC 3875): the head, a blank line, then the body,
# all on stdout. Serve it in CGI mode (--cgi) so stack parses the head.
printf 'Status: 201 Created\r\n'
printf 'Content-Type: text/plain\r\n'
printf '\r\n'
printf 'Hello from CGI, %s request for %s\n' "${REQUEST_METHOD:-GET}" "${PATH_INFO:-/}"
