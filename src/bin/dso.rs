fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // dso-runc hands a create with secret references over to this binary (see runtime::main).
    if args.get(1).is_some_and(|a| a == dso::runtime::CREATE_ENTRY) {
        std::process::exit(dso::runtime::create_main(args[2..].to_vec()));
    }
    std::process::exit(dso::cli::main(args));
}
