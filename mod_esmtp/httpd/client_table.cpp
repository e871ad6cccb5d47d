#include "httpd/client_table.hpp"

#include <apr_shm.h>
#include <apr_strings.h>
#include <http_log.h>
#include <unixd.h>

namespace esmtp
{

namespace
{

constexpr const char *kUserdataKey = "esmtp_client_table";

// Kept in s->process->pool (userdata): lives as long as the parent, across
// restarts. Only data here: the module's code is unloaded and reloaded at
// every restart.
struct Retained {
    apr_shm_t *shm;
    std::size_t entries;
};

// This generation's view (set in post_config, before the children fork).
ClientTable g_table;

} // namespace

void client_table_off()
{
    g_table = ClientTable();
}

ClientTable client_table()
{
    return g_table;
}

// Why anonymous apr_shm and not a provider of httpd's: mod_socache (shmcb)
// stores opaque values with expiry under one global mutex and has no
// atomic read-modify-write, so every count would be a get and a store
// under that mutex (and it needs LoadModule socache_shmcb_module and a
// Mutex); ap_slotmem (mod_slotmem_shm) gives fixed slots by index but no
// lookup by address and needs LoadModule slotmem_shm_module. The table
// needs per-bucket locking and lock-free decrements: plain shared memory.
// Anonymous memory needs no file, no permissions and no name; the children
// inherit it through fork.
int client_table_post_config(apr_pool_t *pconf, server_rec *main, std::size_t entries)
{
    g_table = ClientTable();
    apr_pool_t *pproc = main->process->pool;
    entries = ClientTable::round_entries(entries);
    void *data = nullptr;
    apr_pool_userdata_get(&data, kUserdataKey, pproc);
    auto *r = static_cast<Retained *>(data);
    if (r && r->entries != entries) {
        // A new size: a new table. Children of the old generation keep
        // their mapping of the old one (counts start again from zero).
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, main,
                     "esmtp: ESMTPClientLimitTableSize changed (%" APR_SIZE_T_FMT " -> %" APR_SIZE_T_FMT
                     " entries): per-client counts start again",
                     r->entries, entries);
        apr_shm_destroy(r->shm);
        r->shm = nullptr;
    }
    if (r && r->shm && !ClientTable(apr_shm_baseaddr_get(r->shm), apr_shm_size_get(r->shm)).valid()) {
        // Laid out by another build of the module (a graceful restart after
        // an upgrade that changed the layout, e.g. the AUTH window): a new table.
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, main,
                     "esmtp: the per-client table has another layout (module upgraded): per-client counts start "
                     "again");
        apr_shm_destroy(r->shm);
        r->shm = nullptr;
    }
    if (!r) {
        r = static_cast<Retained *>(apr_pcalloc(pproc, sizeof(Retained)));
        apr_pool_userdata_set(r, kUserdataKey, apr_pool_cleanup_null, pproc);
    }
    if (!r->shm) {
        std::size_t bytes = ClientTable::bytes_for(entries);
        apr_status_t rv = apr_shm_create(&r->shm, bytes, nullptr, pproc);
        if (rv != APR_SUCCESS) {
            r->shm = nullptr;
            ap_log_error(APLOG_MARK, APLOG_EMERG, rv, main,
                         "esmtp: cannot create the per-client table (%" APR_SIZE_T_FMT
                         " bytes of anonymous shared memory)",
                         bytes);
            return !OK;
        }
        std::uint64_t seed = 0;
        apr_generate_random_bytes(reinterpret_cast<unsigned char *>(&seed), sizeof seed);
        ClientTable::format(apr_shm_baseaddr_get(r->shm), apr_shm_size_get(r->shm), entries, seed);
        r->entries = entries;
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, main,
                     "esmtp: per-client table of %" APR_SIZE_T_FMT " entries (%" APR_SIZE_T_FMT
                     " bytes) in anonymous shared memory",
                     entries, bytes);
    }
    g_table = ClientTable(apr_shm_baseaddr_get(r->shm), apr_shm_size_get(r->shm));
    if (!g_table.valid()) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, main, "esmtp: the per-client table is corrupt");
        return !OK;
    }
    // After a start or a non-graceful restart no child is left: counts held
    // by children that died without ending their sessions (a crash, parked
    // sessions of a killed event child) are dropped here. After a graceful
    // restart the old children's sessions still count.
    ap_unixd_mpm_retained_data *mpm = ap_unixd_mpm_get_retained_data();
    if (!mpm || !mpm->was_graceful)
        g_table.reset_connections();
    ClientTable::Stats st = g_table.stats();
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, main,
                 "esmtp: per-client table: %" APR_SIZE_T_FMT " of %" APR_SIZE_T_FMT " entries used, %" APR_SIZE_T_FMT
                 " sessions, %" APR_UINT64_T_FMT " evictions, %" APR_UINT64_T_FMT " untracked",
                 st.used, st.capacity, st.sessions, static_cast<apr_uint64_t>(st.evictions),
                 static_cast<apr_uint64_t>(st.untracked));
    return OK;
}

} // namespace esmtp
