/* placeholder: replaced by the auth implementation */
