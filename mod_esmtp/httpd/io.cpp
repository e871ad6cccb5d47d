#include "httpd/io.hpp"

#include "engine/session.hpp"

#include <util_filter.h>

namespace esmtp
{

namespace
{
// Bytes asked of the input filters per read: a large message streams in
// big chunks, a command batch usually fits in one.
constexpr apr_off_t kReadSize = 64 * 1024;
} // namespace

Io::Io(conn_rec *c)
    : c_(c), in_(apr_brigade_create(c->pool, c->bucket_alloc)), out_(apr_brigade_create(c->pool, c->bucket_alloc))
{
}

bool Io::send(std::string &data, bool flush)
{
    if (c_->aborted) {
        data.clear();
        return false;
    }
    if (!data.empty())
        APR_BRIGADE_INSERT_TAIL(out_, apr_bucket_heap_create(data.data(), data.size(), nullptr, c_->bucket_alloc));
    data.clear();
    if (flush)
        APR_BRIGADE_INSERT_TAIL(out_, apr_bucket_flush_create(c_->bucket_alloc));
    if (APR_BRIGADE_EMPTY(out_))
        return true;
    apr_status_t rv = ap_pass_brigade(c_->output_filters, out_);
    apr_brigade_cleanup(out_);
    if (rv != APR_SUCCESS) {
        c_->aborted = 1;
        return false;
    }
    return true;
}

ReadResult Io::read(Session &session, apr_read_type_e block, apr_status_t &rv)
{
    rv = ap_get_brigade(c_->input_filters, in_, AP_MODE_READBYTES, block, kReadSize);
    if (rv != APR_SUCCESS) {
        apr_brigade_cleanup(in_);
        if (APR_STATUS_IS_EAGAIN(rv))
            return ReadResult::again;
        if (APR_STATUS_IS_TIMEUP(rv))
            return ReadResult::timeout;
        return APR_STATUS_IS_EOF(rv) ? ReadResult::eof : ReadResult::error;
    }
    bool fed = false, eos = false;
    for (apr_bucket *b = APR_BRIGADE_FIRST(in_); b != APR_BRIGADE_SENTINEL(in_); b = APR_BUCKET_NEXT(b)) {
        if (APR_BUCKET_IS_EOS(b)) {
            eos = true;
            break;
        }
        if (APR_BUCKET_IS_METADATA(b))
            continue;
        const char *data;
        apr_size_t len;
        rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ);
        if (rv != APR_SUCCESS) {
            apr_brigade_cleanup(in_);
            return ReadResult::error;
        }
        if (len) {
            session.feed(std::string_view(data, len));
            fed = true;
        }
    }
    apr_brigade_cleanup(in_);
    if (fed)
        return ReadResult::fed;
    if (eos || block == APR_BLOCK_READ)
        return ReadResult::eof;
    return ReadResult::again;
}

bool input_drained(conn_rec *c)
{
    apr_bucket_brigade *bb = apr_brigade_create(c->pool, c->bucket_alloc);
    apr_status_t rv = ap_get_brigade(c->input_filters, bb, AP_MODE_SPECULATIVE, APR_NONBLOCK_READ, 1);
    bool drained = APR_STATUS_IS_EAGAIN(rv) || (rv == APR_SUCCESS && APR_BRIGADE_EMPTY(bb));
    apr_brigade_destroy(bb);
    return drained;
}

void send_refusal(conn_rec *c, std::string text)
{
    Io io(c);
    io.send(text, true);
}

} // namespace esmtp
