#include "cli/doc_render.h"

#include <sstream>

#include "cli/registry.h"

namespace spark::cli {
namespace {

bool visible(const CLI::App* a) { return !a->get_group().empty() && !a->get_name().empty(); }
bool visible(const CLI::Option* o) { return !o->get_group().empty(); }

std::vector<const CLI::App*> children(const CLI::App& app) {
  return app.get_subcommands([](const CLI::App* a) { return visible(a); });
}

std::vector<const CLI::Option*> options_of(const CLI::App& app) {
  return app.get_options([](const CLI::Option* o) { return visible(o); });
}

// Options that apply to a subcommand: its own and, through fallthrough, its parents'.
std::vector<const CLI::Option*> options_with_parents(const std::vector<const CLI::App*>& chain) {
  std::vector<const CLI::Option*> out;
  for (const auto* a : chain)
    for (const auto* o : options_of(*a))
      if (!o->get_positional()) out.push_back(o);
  return out;
}

std::vector<std::string> switch_names(const CLI::Option* o) {
  std::vector<std::string> out;
  for (const auto& s : o->get_snames()) out.push_back("-" + s);
  for (const auto& l : o->get_lnames()) out.push_back("--" + l);
  return out;
}

bool takes_value(const CLI::Option* o) { return o->get_type_size_max() > 0 && o->get_expected_max() > 0; }

std::string value_name(const CLI::Option* o) {
  std::string t = o->get_type_name();
  return t.empty() ? "VALUE" : t;
}

void walk(const CLI::App& app, std::vector<const CLI::App*>& chain, std::vector<std::vector<const CLI::App*>>& out) {
  for (const auto* c : children(app)) {
    chain.push_back(c);
    out.push_back(chain);
    walk(*c, chain, out);
    chain.pop_back();
  }
}

// Every visible command as its chain of apps from the root (root included first).
std::vector<std::vector<const CLI::App*>> chains(const CLI::App& app) {
  std::vector<std::vector<const CLI::App*>> out;
  std::vector<const CLI::App*> chain{&app};
  walk(app, chain, out);
  return out;
}

std::string joined_name(const std::vector<const CLI::App*>& chain, size_t from = 1, const char* sep = " ") {
  std::string s;
  for (size_t i = from; i < chain.size(); ++i) s += (i > from ? sep : "") + chain[i]->get_name();
  return s;
}

// roff: backslashes escaped, hyphens as \-, a line that starts with . or ' protected.
std::string roff(const std::string& text) {
  std::string out;
  bool line_start = true;
  for (char c : text) {
    if (line_start && (c == '.' || c == '\'')) out += "\\&";
    line_start = c == '\n';
    if (c == '\\')
      out += "\\e";
    else if (c == '-')
      out += "\\-";
    else
      out += c;
  }
  return out;
}

// A paragraph of description text: its own lines kept (.br between them).
std::string roff_block(const std::string& text) {
  std::string out;
  std::istringstream in(text);
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    if (!first) out += ".br\n";
    first = false;
    out += roff(line) + "\n";
  }
  return out;
}

void man_option(std::ostringstream& m, const CLI::Option* o) {
  m << ".TP\n";
  if (o->get_positional()) {
    m << "\\fI" << roff(o->get_name(true)) << "\\fR";
    if (o->get_items_expected_max() > 1) m << " ...";
  } else {
    auto names = switch_names(o);
    for (size_t i = 0; i < names.size(); ++i) m << (i ? ", " : "") << "\\fB" << roff(names[i]) << "\\fR";
    if (takes_value(o)) m << " \\fI" << roff(value_name(o)) << "\\fR";
  }
  m << "\n" << roff_block(o->get_description().empty() ? "(no description)" : o->get_description());
}

std::string shell_words(const std::vector<std::string>& words) {
  std::string s;
  for (const auto& w : words) s += (s.empty() ? "" : " ") + w;
  return s;
}

std::string state_name(const std::vector<const CLI::App*>& chain) {
  std::string s = "root";
  for (size_t i = 1; i < chain.size(); ++i) s += "/" + chain[i]->get_name();
  return s;
}

// zsh _describe entries: "name:description", a colon in the name escaped, single-quoted.
std::string zsh_entry(const std::string& name, const std::string& desc) {
  std::string first_line = desc.substr(0, desc.find('\n'));
  std::string e;
  for (char c : name) e += c == ':' ? std::string("\\:") : std::string(1, c);
  e += ":" + first_line;
  std::string q = "'";
  for (char c : e) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

std::vector<std::vector<std::string>> command_paths(const CLI::App& app) {
  std::vector<std::vector<std::string>> out;
  for (const auto& chain : chains(app)) {
    std::vector<std::string> p;
    for (size_t i = 1; i < chain.size(); ++i) p.push_back(chain[i]->get_name());
    out.push_back(p);
  }
  return out;
}

std::string render_man(const CLI::App& app, const std::string& version) {
  std::ostringstream m;
  std::string desc = app.get_description();
  std::string summary = desc.substr(0, desc.find('\n'));
  if (auto c = summary.find(": "); c != std::string::npos) summary = summary.substr(c + 2);
  if (!summary.empty() && summary.back() == '.') summary.pop_back();
  m << ".\\\" Generated by spark-tune-docgen from the command line's own definitions; do not edit.\n"
    << ".TH SPARK\\-TUNE 1 \"\" \"spark-tune " << roff(version) << "\" \"User Commands\"\n"
    << ".SH NAME\nspark\\-tune \\- " << roff(summary) << "\n"
    << ".SH SYNOPSIS\n.B spark\\-tune\n[\\fIGLOBAL OPTIONS\\fR] \\fIVERB\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]\n"
    << ".SH DESCRIPTION\n"
    << roff_block(desc)
    << ".PP\nThe agent (\\fBspark\\-tune agent\\fR) is started by systemd through \\fBspark\\-tune.socket\\fR, or by\n"
       "the CLI itself where systemd does not run.\n"
    << ".SH GLOBAL OPTIONS\nThese come before the verb, or anywhere after it.\n";
  for (const auto* o : options_of(app)) man_option(m, o);
  m << ".SH VERBS\n";
  for (const auto& chain : chains(app)) {
    const CLI::App* a = chain.back();
    m << ".SS \"spark\\-tune " << roff(joined_name(chain)) << "\"\n";
    m << roff_block(a->get_description());
    auto opts = options_of(*a);
    std::string synopsis = "spark-tune " + joined_name(chain);
    if (!children(*a).empty()) synopsis += " SUBCOMMAND";
    for (const auto* o : opts)
      if (o->get_positional()) synopsis += " " + o->get_name(true) + (o->get_items_expected_max() > 1 ? "..." : "");
    m << ".PP\n\\fB" << roff(synopsis) << "\\fR\n";
    if (!opts.empty()) {
      m << ".RS\n";
      for (const auto* o : opts) man_option(m, o);
      m << ".RE\n";
    }
    std::string footer = a->get_footer();
    if (!footer.empty()) m << ".PP\n.nf\n" << roff(footer) << (footer.back() == '\n' ? "" : "\n") << ".fi\n";
  }
  m << ".SH EXIT STATUS\n";
  for (const auto& e : k_exit_codes) m << ".TP\n\\fB" << e.code << "\\fR\n" << roff(e.meaning) << "\n";
  m << ".SH FILES\n"
    << ".TP\n\\fI/usr/share/spark\\-tune/policies\\fR\nthe shipped profiles (\\fBspark\\-tune profile list\\fR)\n"
    << ".TP\n\\fI/var/lib/spark\\-tune/journal.json\\fR\nthe change journal: every original value, from which "
       "\\fBspark\\-tune revert\\fR restores\n"
    << ".TP\n\\fI/run/spark\\-tune/agent.sock\\fR\nthe agent's control socket (root and group spark\\-tune)\n"
    << ".SH SEE ALSO\n\\fBsystemctl\\fR(1), \\fBsysctl\\fR(8), \\fBsystemd.resource\\-control\\fR(5)\n";
  return m.str();
}

std::string render_bash_completion(const CLI::App& app) {
  std::ostringstream b;
  auto all = chains(app);
  std::vector<const CLI::App*> root{&app};
  all.insert(all.begin(), root);
  b << "# bash completion for spark-tune, generated by spark-tune-docgen from its command line; do not edit.\n"
    << "_spark_tune() {\n"
    << "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
    << "  local cmdpath=root i w subs opts valued\n"
    << "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
    << "    w=${COMP_WORDS[i]}\n"
    << "    [[ $w == -- ]] && return 0\n"
    << "    case \"$cmdpath/$w\" in\n";
  for (const auto& chain : all) {
    if (chain.size() < 2) continue;
    std::vector<const CLI::App*> parent(chain.begin(), chain.end() - 1);
    b << "      " << state_name(parent) << "/" << chain.back()->get_name() << ") cmdpath=" << state_name(chain)
      << " ;;\n";
  }
  b << "    esac\n  done\n  case $cmdpath in\n";
  for (const auto& chain : all) {
    std::vector<std::string> subs, opts, valued;
    for (const auto* c : children(*chain.back())) subs.push_back(c->get_name());
    for (const auto* o : options_with_parents(chain)) {
      for (const auto& n : switch_names(o)) {
        opts.push_back(n);
        if (takes_value(o)) valued.push_back(n);
      }
    }
    b << "    " << state_name(chain) << ") subs=\"" << shell_words(subs) << "\" opts=\"" << shell_words(opts)
      << "\" valued=\"" << shell_words(valued) << "\" ;;\n";
  }
  b << "  esac\n"
    << "  if [[ -n $prev && \" $valued \" == *\" $prev \"* ]]; then\n"
    << "    COMPREPLY=($(compgen -f -- \"$cur\"))\n"
    << "  elif [[ $cur == -* ]]; then\n"
    << "    COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
    << "  elif [[ -n $subs ]]; then\n"
    << "    COMPREPLY=($(compgen -W \"$subs\" -- \"$cur\"))\n"
    << "  else\n"
    << "    COMPREPLY=($(compgen -f -- \"$cur\"))\n"
    << "  fi\n"
    << "}\n"
    << "complete -F _spark_tune spark-tune\n";
  return b.str();
}

std::string render_zsh_completion(const CLI::App& app) {
  std::ostringstream z;
  auto all = chains(app);
  std::vector<const CLI::App*> root{&app};
  all.insert(all.begin(), root);
  z << "#compdef spark-tune\n"
    << "# zsh completion for spark-tune, generated by spark-tune-docgen from its command line; do not edit.\n"
    << "_spark-tune() {\n"
    << "  local cmdpath=root i w\n"
    << "  local -a subs opts\n"
    << "  for ((i = 2; i < CURRENT; i++)); do\n"
    << "    w=${words[i]}\n"
    << "    [[ $w == -- ]] && { _files; return }\n"
    << "    case \"$cmdpath/$w\" in\n";
  for (const auto& chain : all) {
    if (chain.size() < 2) continue;
    std::vector<const CLI::App*> parent(chain.begin(), chain.end() - 1);
    z << "      " << state_name(parent) << "/" << chain.back()->get_name() << ") cmdpath=" << state_name(chain)
      << " ;;\n";
  }
  z << "    esac\n  done\n  case $cmdpath in\n";
  for (const auto& chain : all) {
    z << "    " << state_name(chain) << ")\n      subs=(";
    for (const auto* c : children(*chain.back())) z << " " << zsh_entry(c->get_name(), c->get_description());
    z << " )\n      opts=(";
    for (const auto* o : options_with_parents(chain))
      for (const auto& n : switch_names(o)) z << " " << zsh_entry(n, o->get_description());
    z << " ) ;;\n";
  }
  z << "  esac\n"
    << "  if [[ $PREFIX == -* ]]; then\n"
    << "    _describe -t options 'option' opts\n"
    << "  elif (( ${#subs} )); then\n"
    << "    _describe -t commands 'verb' subs\n"
    << "  else\n"
    << "    _files\n"
    << "  fi\n"
    << "}\n"
    << "_spark-tune \"$@\"\n";
  return z.str();
}

}  // namespace spark::cli
