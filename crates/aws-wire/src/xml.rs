//! A small writer for rest-xml documents: elements, escaped text, and the XML declaration.
//! It writes in one pass into a string; it does not check that tags balance beyond what
//! [`Writer::finish`] asserts in debug builds.

/// Escapes text for an element's content or an attribute value.
pub fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters XML 1.0 cannot carry, even as references, are dropped.
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
}

pub struct Writer {
    out: String,
    depth: usize,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            depth: 0,
        }
    }

    /// Opens an element; `xmlns` on the document's root.
    pub fn open_ns(&mut self, name: &str, xmlns: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str(" xmlns=\"");
        escape(xmlns, &mut self.out);
        self.out.push_str("\">");
        self.depth += 1;
    }

    pub fn open(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.depth += 1;
    }

    pub fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self.depth = self.depth.saturating_sub(1);
    }

    /// `<name>text</name>`, the text escaped.
    pub fn element(&mut self, name: &str, text: &str) {
        self.open(name);
        escape(text, &mut self.out);
        self.close(name);
    }

    pub fn finish(self) -> String {
        debug_assert_eq!(self.depth, 0, "unbalanced XML: {}", self.out);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_elements_nest() {
        let mut w = Writer::new();
        w.open_ns(
            "ListBucketResult",
            "http://s3.amazonaws.com/doc/2006-03-01/",
        );
        w.element("Name", "b");
        w.open("Contents");
        w.element("Key", "a<b>&\"c'\u{1}d");
        w.close("Contents");
        w.close("ListBucketResult");
        let xml = w.finish();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
        assert!(xml.contains("<Contents><Key>a&lt;b&gt;&amp;&quot;c&apos;d</Key></Contents>"));
        assert!(xml.ends_with("</ListBucketResult>"));
    }
}
