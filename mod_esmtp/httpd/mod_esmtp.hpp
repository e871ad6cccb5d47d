// The httpd module record, shared by the glue files.
#pragma once

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>

// The build hides every symbol (-fvisibility=hidden) but the module record.
extern "C" __attribute__((visibility("default"))) module AP_MODULE_DECLARE_DATA esmtp_module;

#ifdef APLOG_USE_MODULE
APLOG_USE_MODULE(esmtp);
#endif
