//! The system-call filter of every process sandbox: calls that reconfigure the kernel, the
//! machine or namespaces, or that inspect other processes, fail with EPERM.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

const DENIED: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_process_madvise,
    libc::SYS_kcmp,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_lookup_dcookie,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_personality,
];

/// The namespaces a process restored from a template enters at once (`setns` with a pidfd).
pub(crate) const JAIL_NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWPID;

/// Namespace flags a sandboxed process may not pass to clone.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

fn program(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, TargetArch::x86_64)
        .map_err(|e| format!("building the seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e| format!("compiling the seccomp filter: {e:?}"))
}

/// The filters of a sandbox's program. A snapshot template's (`template`) also lets it call
/// `setns`: the processes it forks enter the namespaces of their own jails with it, then add
/// a filter that takes `setns` away again ([`RESTORED_FILTERS`] in all).
pub(crate) fn filters(template: bool) -> Result<Vec<BpfProgram>, String> {
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> = DENIED
        .iter()
        .filter(|s| !(template && **s == libc::SYS_setns))
        .map(|s| (*s, vec![]))
        .collect();
    if template {
        // setns only as a copy enters its jail: every namespace at once, which only a pidfd
        // takes; and no pidfd but the one the worker hands it.
        let other_flags = SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            JAIL_NAMESPACES as u64,
        )
        .map_err(|e| format!("building the seccomp filter: {e}"))?;
        denied.insert(
            libc::SYS_setns,
            vec![
                SeccompRule::new(vec![other_flags])
                    .map_err(|e| format!("building the seccomp filter: {e}"))?,
            ],
        );
        denied.insert(libc::SYS_pidfd_open, vec![]);
    }
    let mut clone_rules = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let condition = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(*flag as u64),
            *flag as u64,
        )
        .map_err(|e| format!("building the seccomp filter: {e}"))?;
        clone_rules.push(
            SeccompRule::new(vec![condition])
                .map_err(|e| format!("building the seccomp filter: {e}"))?,
        );
    }
    denied.insert(libc::SYS_clone, clone_rules);
    let eperm = program(denied, SeccompAction::Errno(libc::EPERM as u32))?;
    // clone3 takes its flags in memory where a filter cannot read them; ENOSYS makes libc fall
    // back to clone, which the filter above inspects.
    let clone3: BTreeMap<i64, Vec<SeccompRule>> =
        [(libc::SYS_clone3, vec![])].into_iter().collect();
    let enosys = program(clone3, SeccompAction::Errno(libc::ENOSYS as u32))?;
    Ok(vec![eperm, enosys])
}

/// How many filters a process restored from a template has: its template's two and the one
/// it adds after entering its jail, which refuses `setns`.
pub const RESTORED_FILTERS: u32 = 3;

/// Installs filters built earlier with [`filters`]: building them takes longer than a cold
/// start should wait, so the helper builds them while it waits for its function.
pub(crate) fn apply(filters: &[BpfProgram]) -> Result<(), String> {
    for filter in filters {
        seccompiler::apply_filter(filter)
            .map_err(|e| format!("installing the seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_compile() {
        for template in [false, true] {
            let filters = super::filters(template).unwrap();
            assert_eq!(filters.len(), 2);
            assert!(filters.iter().all(|f| !f.is_empty()));
        }
        // The template's filter differs: setns with other flags, and pidfd_open, refused.
        let strict = super::filters(false).unwrap();
        let template = super::filters(true).unwrap();
        assert_ne!(template[0], strict[0]);
    }
}
